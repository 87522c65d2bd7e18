//! User-given text at the edges: names are refused when they hold control
//! characters (so they cannot forge log lines or drive a terminal), and
//! [`escape`] makes any user-given string safe to print in a server log or
//! an operator's terminal.

use crate::invalid::Invalid;
use std::borrow::Cow;
use std::fmt;

/// A control character: C0 (newline, ESC, ...), DEL or C1.
fn is_control(c: char) -> bool {
    c.is_control()
}

/// Refused, naming `field`, if `value` holds a control character.
pub fn check_name(field: &str, value: &str) -> Result<(), Invalid> {
    match value.chars().find(|c| is_control(*c)) {
        None => Ok(()),
        Some(c) => Err(Invalid(format!(
            "{field} must not contain control characters (found {:?})",
            c
        ))),
    }
}

/// `s` with every control character written as an escape (`\n`, `\u{1b}`);
/// borrowed when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Displays its string through [`escape`]: `tracing::info!(name = %Esc(&n))`.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_control_characters_are_refused() {
        assert!(check_name("name", "nightly build-1 ü").is_ok());
        for bad in [
            "a\nb",
            "\u{1b}[31mred",
            "x\u{7f}",
            "c1\u{9b}2J",
            "tab\t",
            "nul\0",
        ] {
            let e = check_name("name", bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|m| m.starts_with("name must not")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn escape_writes_control_characters_as_escapes() {
        assert!(matches!(escape("plain ü \"q\""), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\u{1b}[2J\u{9b}"), "a\\nb\\u{1b}[2J\\u{9b}");
        assert_eq!(Esc("x\ry").to_string(), "x\\ry");
    }
}
