//! Browser session rows: `POST /mags-browser` until Chromium's DevTools
//! endpoint answers through the URL proxy (what `mags browser` waits for).
//! The first session of a server also makes the browser image's template.

use crate::ms;
use crate::report::Row;
use mags_client::Client;
use std::time::Instant;

/// One first session, then `n` more, each stopped before the next.
pub async fn rows(client: &Client, n: usize) -> anyhow::Result<Vec<Row>> {
    let mut first = Vec::new();
    let mut later = Vec::new();
    for i in 0..=n {
        let t = Instant::now();
        let s = client.browser(Some(&format!("bench-browser-{i}"))).await?;
        let took = ms(t.elapsed());
        anyhow::ensure!(
            s.ws_endpoint.contains("/devtools/browser/"),
            "no browser WebSocket in {s:?}"
        );
        if i == 0 {
            first.push(took);
        } else {
            later.push(took);
        }
        client.stop(&s.request_id).await?;
    }
    Ok(vec![
        Row::new(
            "browser session: first start (builds the browser template)",
            first,
        ),
        Row::new(
            "browser session: start until CDP answers (mags browser)",
            later,
        ),
    ])
}
