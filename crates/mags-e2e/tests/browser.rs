//! Browser sessions end to end, with real VMs: `mags browser` starts
//! Chromium in a sandbox from the browser image; a CDP client (plain CDP
//! over WebSocket, as Playwright's `connect_over_cdp` speaks it) connects
//! to `wsEndpoint` through the URL proxy, opens a page served by another
//! sandbox at its public URL and reads its title; the endpoint refuses requests without the
//! session's secret or its owner's token; `mags stop` ends it.

use futures::{SinkExt, StreamExt};
use mags_e2e::{stderr, stdout, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const TITLE: &str = "Hello from a Mags sandbox";

/// A client that resolves every name to loopback (`<sub>.localhost`).
fn client() -> reqwest::Client {
    mags_e2e::loopback_client()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A minimal CDP client: numbered commands, answers matched by id; the
/// last events are kept to explain a failure.
struct Cdp {
    ws: Ws,
    next_id: u64,
    events: std::collections::VecDeque<String>,
}

impl Cdp {
    async fn connect(ws_url: &str) -> Cdp {
        let port: u16 = ws_url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|h| h.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .expect("port in the ws URL");
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (ws, resp) = tokio_tungstenite::client_async(ws_url, tcp)
            .await
            .expect("CDP WebSocket handshake");
        assert_eq!(resp.status(), 101);
        Cdp {
            ws,
            next_id: 1,
            events: Default::default(),
        }
    }

    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within 120 s"))
                .expect("connection open")
                .expect("frame");
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("CDP JSON");
            if v["id"] == json!(id) {
                assert!(
                    v.get("error").is_none(),
                    "{method} failed: {v}; events before: {:#?}",
                    self.events
                );
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                if self.events.len() == 100 {
                    self.events.pop_front();
                }
                let mut e = v.to_string();
                e.truncate(400);
                self.events.push_back(e);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_session_serves_cdp_behind_its_secret_and_reads_a_page_title() {
    let server = Server::start(&[]);
    let t0 = Instant::now();
    let o = server.mags_output(&["browser", "shop", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    eprintln!("browser session up in {:.1} s", t0.elapsed().as_secs_f64());
    let s: Value = serde_json::from_str(&stdout(&o)).expect("browser --json");
    let ws = s["wsEndpoint"].as_str().expect("wsEndpoint").to_string();
    let cdp_http = s["cdpHttpUrl"].as_str().expect("cdpHttpUrl").to_string();
    assert_eq!(s["cdpUrl"], ws.as_str());
    assert!(
        ws.starts_with("ws://") && ws.contains(".localhost:"),
        "{ws}"
    );
    assert!(ws.contains("/devtools/browser/"), "{ws}");
    assert!(cdp_http.ends_with("/json/version"), "{cdp_http}");

    // The secret is the first path segment; without it, or with another
    // user's token, the proxy refuses; the owner's token also works.
    let base = cdp_http.trim_end_matches("/json/version");
    let (origin, secret) = base.rsplit_once('/').expect("secret segment");
    assert_eq!(secret.len(), 64, "{base}");
    let c = client();
    let r = c
        .get(format!("{origin}/json/version"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401, "no secret, no token");
    let r = c
        .get(format!("{origin}/{}/json/version", "0".repeat(64)))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401, "a wrong secret");
    let stranger = server.token_for("stranger");
    let r = c
        .get(format!("{origin}/json/version"))
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401, "another user's token");
    let r = c
        .get(format!("{origin}/json/version"))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "the owner's token");
    let r = c.get(&cdp_http).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let version: Value = r.json().await.expect("/json/version JSON");
    assert_eq!(
        version["webSocketDebuggerUrl"],
        ws.as_str(),
        "Chromium's own address is rewritten to the public, secret URL"
    );
    assert!(
        version["Browser"]
            .as_str()
            .is_some_and(|b| b.contains("Chrome")),
        "{version}"
    );
    // The WebSocket without the secret is refused too.
    let no_secret = ws.replacen(&format!("/{secret}"), "", 1);
    let port: u16 = origin
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    match tokio_tungstenite::client_async(no_secret.as_str(), tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!(
            "CDP without the secret was not refused: {:?}",
            other.map(|r| r.1)
        ),
    }

    // A page served by another sandbox, at its public URL: the browser
    // reaches it through its egress proxy, which hands the server's own
    // apps domain to the URL proxy.
    let serve = format!(
        "mkdir -p /root/site && printf '<html><head><title>{TITLE}</title></head><body>hi</body></html>' \
         > /root/site/index.html && cd /root/site && \
         (setsid python3 -m http.server 8080 >/dev/null 2>&1 &) && \
         for i in $(seq 100); do curl -sf --noproxy '*' -o /dev/null http://127.0.0.1:8080/ && exit 0; sleep 0.2; done; exit 1"
    );
    let o = server.mags_output(&["run", "-p", "-n", "site", "--url", "--port", "8080", &serve]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    let page_url = err
        .split_once("URL (port 8080): ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .expect("the site's URL was printed")
        .to_string();
    assert!(page_url.contains(".localhost:"), "{page_url}");
    // The page is there for anyone holding the URL (e.g. this test).
    let r = c
        .get(format!("{page_url}/"))
        .send()
        .await
        .expect("get page");
    assert_eq!(r.status(), 200);

    // A real CDP session through the URL proxy.
    let mut cdp = Cdp::connect(&ws).await;
    let version = cdp.call(None, "Browser.getVersion", json!({})).await;
    assert!(version["product"]
        .as_str()
        .is_some_and(|p| p.contains("Chrome")));
    let target = cdp
        .call(None, "Target.createTarget", json!({"url": "about:blank"}))
        .await;
    let target_id = target["targetId"].as_str().expect("targetId").to_string();
    let attached = cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )
        .await;
    let session = attached["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    // Wait, as Playwright's `new_page()` does, until the new tab has loaded
    // its initial about:blank. Under TCG its renderer takes tens of seconds
    // to start, and a navigation sent before that first load has committed
    // is cancelled by it: `Page.navigate` answered `net::ERR_ABORTED`.
    for domain in ["Page.enable", "Network.enable"] {
        cdp.call(Some(&session), domain, json!({})).await;
    }
    let t_blank = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let r = cdp
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": "document.readyState + ' ' + location.href", "returnByValue": true}),
            )
            .await;
        let state = r["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == "complete about:blank" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new tab never finished loading about:blank ({state:?}); events: {:#?}",
            cdp.events
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "new tab ready {:.1} s after attaching",
        t_blank.elapsed().as_secs_f64()
    );
    let nav = cdp
        .call(
            Some(&session),
            "Page.navigate",
            json!({"url": format!("{page_url}/")}),
        )
        .await;
    if nav.get("errorText").is_some() {
        let o = server.mags_output(&["exec", "shop", "tail -n 40 /tmp/chromium.log"]);
        panic!(
            "navigation failed: {nav}\nCDP events before it: {:#?}\nChromium's log in the guest:\n{}",
            cdp.events,
            stdout(&o)
        );
    }
    // Under TCG a new renderer process for the page takes a while.
    let t_nav = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(240);
    let title = loop {
        let r = cdp
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": "document.title", "returnByValue": true}),
            )
            .await;
        let title = r["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if title == TITLE || Instant::now() > deadline {
            break title;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!(
        "page title read {:.1} s after navigating",
        t_nav.elapsed().as_secs_f64()
    );
    if title != TITLE {
        let r = cdp
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": "location.href + ' ' + document.documentElement.outerHTML", "returnByValue": true}),
            )
            .await;
        let o = server.mags_output(&["exec", "shop", "tail -n 20 /tmp/chromium.log"]);
        panic!("title {title:?}; page: {r}; in the guest: {}", stdout(&o));
    }
    drop(cdp);

    // `mags browser shop` again finds the live session.
    let o = server.mags_output(&["browser", "shop", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let again: Value = serde_json::from_str(&stdout(&o)).expect("browser --json");
    assert_eq!(again["request_id"], s["request_id"]);
    assert_eq!(again["wsEndpoint"], ws.as_str());

    let o = server.mags_output(&["stop", "site"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Stop ends it: the endpoint is gone.
    let o = server.mags_output(&["stop", "shop"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = c.get(&cdp_http).send().await.expect("get");
    assert_eq!(r.status(), 404, "a stopped session's endpoint");
}
