//! The URL proxy over TLS, with a real VM: `magsd serve --apps-tls-cert
//! --apps-tls-key` with a self-signed wildcard certificate made here;
//! `mags run --url` prints an https URL, a client that trusts the
//! certificate gets the sandbox's page through it, one that does not
//! refuses the connection.

use mags_e2e::{stderr, Server};
use std::time::{Duration, Instant};

fn client(root: Option<&str>) -> reqwest::Client {
    let mut b = mags_e2e::loopback_client().timeout(Duration::from_secs(60));
    if let Some(pem) = root {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"));
    }
    b.build().expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_proxy_serves_https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().expect("tempdir");
    let made = rcgen::generate_simple_self_signed(vec!["*.apps.test".to_string()])
        .expect("self-signed certificate");
    let cert_pem = made.cert.pem();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, &cert_pem).expect("write cert");
    std::fs::write(&key, made.key_pair.serialize_pem()).expect("write key");

    let server = Server::start(&[
        "--apps-domain",
        "apps.test",
        "--apps-listen",
        "127.0.0.1:0",
        "--apps-tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--apps-tls-key",
        key.to_str().expect("utf-8 path"),
    ]);
    let script = "echo served-over-tls > /root/index.txt && cd /root && \
                  (setsid python3 -m http.server 8080 >/dev/null 2>&1 &)";
    let o = server.mags_output(&["run", "-p", "-n", "web", "--url", "--port", "8080", script]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), server.log());
    let err = stderr(&o);
    let url = err
        .split_once("): ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .expect("a URL was printed")
        .to_string();
    assert!(
        url.starts_with("https://") && url.contains(".apps.test:"),
        "{url}"
    );

    let trusted = client(Some(&cert_pem));
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let last = match trusted.get(format!("{url}/index.txt")).send().await {
            Ok(r) if r.status() == 200 => break r.text().await.expect("body"),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => format!("{e:?}"),
        };
        assert!(Instant::now() < deadline, "never 200 over TLS: {last}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(body, "served-over-tls\n");

    // A client that does not trust the certificate gets no answer at all.
    let r = client(None).get(format!("{url}/index.txt")).send().await;
    assert!(r.is_err(), "an untrusted certificate was accepted: {r:?}");
    // Nor does plain HTTP to the TLS port get a page.
    let plain = url.replacen("https://", "http://", 1);
    let r = client(None).get(format!("{plain}/index.txt")).send().await;
    assert!(
        r.as_ref().map_or(true, |r| r.status() != 200),
        "plain HTTP got a page: {r:?}"
    );

    let o = server.mags_output(&["stop", "web"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
