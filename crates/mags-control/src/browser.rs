//! Browser sessions: a persistent job on the browser image
//! (`rootfs_type: "browser"`, Debian's Chromium) whose script starts
//! headless Chromium with remote debugging on [`CDP_PORT`] in the guest.
//!
//! The CDP endpoint is a `job_access` record of that port with a secret:
//! the URL proxy (`mags-server`'s `proxy.rs`) serves it only to requests whose path
//! starts with `/<secret>` (the prefix is removed before the guest sees
//! the request) or that carry the owner's API token as a bearer token.
//! Chromium writes its own address (`ws://localhost:9222/...`) into the
//! `/json/*` answers; the proxy rewrites it to the public one, secret
//! included, so a CDP client that follows `webSocketDebuggerUrl` stays on
//! the authenticated path.

use crate::apps::Apps;

/// Chromium's remote-debugging port in the guest (loopback only: the URL
/// proxy reaches it through the agent's tunnel).
pub const CDP_PORT: u16 = 9222;

/// `rootfs_type` of a browser job.
pub const ROOTFS_TYPE: &str = "browser";

/// The Host the proxy sends to Chromium: its DevTools HTTP server answers
/// only requests for an IP address or `localhost`, and builds the URLs in
/// its answers from this value.
pub fn guest_host() -> String {
    format!("localhost:{CDP_PORT}")
}

/// The session's script: start Chromium in its own session (it outlives
/// the script) and return once its DevTools endpoint answers, so the job's
/// exit code says whether the browser is up. Outbound traffic goes through
/// the egress proxy when the guest has one; the guest's own loopback stays
/// direct, but `*.localhost` (the default apps domain, which Chromium
/// would otherwise send to the guest's loopback) goes to the proxy, which
/// routes the server's public URLs to its URL proxy.
pub const LAUNCH_SCRIPT: &str = r#"set -u
proxy=()
if [ -n "${http_proxy:-}" ]; then
  proxy=(--proxy-server="$http_proxy" '--proxy-bypass-list=127.0.0.1;localhost;[::1];<-loopback>')
fi
setsid chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --no-first-run --no-default-browser-check --disable-extensions \
  --remote-debugging-address=127.0.0.1 --remote-debugging-port=9222 \
  --remote-allow-origins='*' --user-data-dir=/root/.mags-chromium "${proxy[@]}" \
  about:blank </dev/null >/tmp/chromium.log 2>&1 &
for _ in $(seq 1 1200); do
  if curl -sf --noproxy '*' -o /dev/null http://127.0.0.1:9222/json/version; then
    echo "chromium is up: DevTools on 127.0.0.1:9222"
    exit 0
  fi
  sleep 0.25
done
echo "chromium did not open its DevTools port; its log:" >&2
tail -n 30 /tmp/chromium.log >&2
exit 1
"#;

/// A new session secret: 64 hex digits from two random UUIDs (244 bits).
pub fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// If `path_and_query` starts with the `/<secret>` segment, the rest
/// (always starting with `/`).
pub fn strip_secret(path_and_query: &str, secret: &str) -> Option<String> {
    let rest = path_and_query.strip_prefix('/')?.strip_prefix(secret)?;
    match rest.chars().next() {
        None => Some("/".into()),
        Some('/') => Some(rest.into()),
        Some('?') => Some(format!("/{rest}")),
        Some(_) => None,
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The public base of a session: `http(s)://<sub>.<domain>[:port]/<secret>`.
pub fn http_base(apps: &Apps, subdomain: &str, secret: &str) -> String {
    format!("{}/{secret}", apps.url(subdomain))
}

/// The WebSocket form of [`http_base`].
pub fn ws_base(apps: &Apps, subdomain: &str, secret: &str) -> String {
    let http = http_base(apps, subdomain, secret);
    match http.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", http.trim_start_matches("http://")),
    }
}

/// Rewrites Chromium's own address in a `/json/*` answer to the public
/// one: `ws://localhost:9222/x` -> `<ws base>/x`, and the `ws=` parameter
/// of `devtoolsFrontendUrl` likewise.
pub fn rewrite_json(body: &str, apps: &Apps, subdomain: &str, secret: &str) -> String {
    let guest = guest_host();
    let ws = ws_base(apps, subdomain, secret);
    let (scheme, host_path) = ws.split_once("://").unwrap_or(("ws", ws.as_str()));
    body.replace(&format!("ws://{guest}/"), &format!("{ws}/"))
        .replace(&format!("ws={guest}/"), &format!("{scheme}={host_path}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Apps {
        Apps {
            port: Some(7070),
            ..Apps::default()
        }
    }

    #[test]
    fn secret_prefix() {
        assert_eq!(
            strip_secret("/abc/json/version", "abc").as_deref(),
            Some("/json/version")
        );
        assert_eq!(strip_secret("/abc", "abc").as_deref(), Some("/"));
        assert_eq!(strip_secret("/abc?x=1", "abc").as_deref(), Some("/?x=1"));
        assert_eq!(strip_secret("/abcd/json", "abc"), None);
        assert_eq!(strip_secret("/json/version", "abc"), None);
        assert_eq!(strip_secret("/", "abc"), None);
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abc", "abd"));
        assert!(!secret_eq("abc", "abcd"));
        let s = new_secret();
        assert_eq!(s.len(), 64);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn json_answers_point_at_the_public_url() {
        let body = r#"{"webSocketDebuggerUrl": "ws://localhost:9222/devtools/browser/b1",
            "devtoolsFrontendUrl": "/devtools/inspector.html?ws=localhost:9222/devtools/page/p1"}"#;
        let out = rewrite_json(body, &apps(), "sub", "sec");
        assert!(
            out.contains("\"ws://sub.localhost:7070/sec/devtools/browser/b1\""),
            "{out}"
        );
        assert!(
            out.contains("?ws=sub.localhost:7070/sec/devtools/page/p1"),
            "{out}"
        );
        let tls = Apps {
            domain: "apps.example.com".into(),
            scheme: "https".into(),
            port: None,
        };
        let out = rewrite_json(body, &tls, "sub", "sec");
        assert!(
            out.contains("\"wss://sub.apps.example.com/sec/devtools/browser/b1\""),
            "{out}"
        );
        assert!(
            out.contains("?wss=sub.apps.example.com/sec/devtools/page/p1"),
            "{out}"
        );
        assert_eq!(
            http_base(&apps(), "sub", "sec"),
            "http://sub.localhost:7070/sec"
        );
    }
}
