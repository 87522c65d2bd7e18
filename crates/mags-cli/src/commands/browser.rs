//! `mags browser [NAME]`: a sandbox running headless Chromium, reached
//! through the server's URL proxy. The URLs carry the session's secret:
//! anyone holding them can drive the browser, so treat them like a token.

use super::{connect, print_json};

/// Starts (or finds) the session and prints its CDP endpoints.
pub async fn start(name: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    if !json {
        eprintln!("mags: starting the browser (the first start builds the browser image)...");
    }
    let session = client.browser(name).await?;
    if json {
        print_json(&session)?;
        return Ok(0);
    }
    println!("cdpUrl:     {}", session.cdp_url);
    println!("cdpHttpUrl: {}", session.cdp_http_url);
    println!("wsEndpoint: {}", session.ws_endpoint);
    let who = session.name.as_deref().unwrap_or(&session.request_id);
    eprintln!(
        "mags: browser {who} is up; e.g. Playwright: chromium.connect_over_cdp(wsEndpoint). \
         `mags stop {who}` ends it"
    );
    Ok(0)
}
