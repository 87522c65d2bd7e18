//! Where public URLs live (`magsd serve --apps-domain`): the URL of a
//! subdomain, and the subdomain a Host header names. Used by the routes
//! that hand out URLs, browser sessions and the URL proxy.

/// Where public URLs live; see `magsd serve --apps-domain`.
#[derive(Debug, Clone)]
pub struct Apps {
    /// URLs are `<sub>.<domain>`; `localhost` works in a browser with no DNS.
    pub domain: String,
    /// `http` or `https` (behind a TLS-terminating front).
    pub scheme: String,
    /// Port in URLs; `None` for the scheme's default.
    pub port: Option<u16>,
}

impl Default for Apps {
    fn default() -> Self {
        Apps {
            domain: "localhost".into(),
            scheme: "http".into(),
            port: None,
        }
    }
}

impl Apps {
    /// The public URL of `subdomain`.
    pub fn url(&self, subdomain: &str) -> String {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        match self.port {
            Some(p) if p != default_port => {
                format!("{}://{subdomain}.{}:{p}", self.scheme, self.domain)
            }
            _ => format!("{}://{subdomain}.{}", self.scheme, self.domain),
        }
    }

    /// The subdomain a Host header names, if it is under the apps domain.
    pub fn subdomain<'a>(&self, host: &'a str) -> Option<&'a str> {
        let host = strip_port(host);
        let suffix_len = self.domain.len() + 1;
        if host.len() <= suffix_len {
            return None;
        }
        let (sub, rest) = host.split_at(host.len() - suffix_len);
        (rest.starts_with('.')
            && rest[1..].eq_ignore_ascii_case(&self.domain)
            && !sub.contains('.'))
        .then_some(sub)
    }
}

/// `host` without a `:port` (an IPv6 literal's brackets kept).
pub fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => h,
        _ => host,
    }
}
