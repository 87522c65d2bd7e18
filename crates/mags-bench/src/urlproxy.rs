//! URL proxy rows: a request through the public URL (Host routing, agent
//! tunnel) against the same request made inside the guest, and a large
//! download through the proxy.

use crate::ms;
use crate::report::{median, Row};
use anyhow::{bail, Context};
use mags_client::Client;
use std::time::{Duration, Instant};

/// `n` small requests each way, and one download of `big_mb` MB.
pub async fn rows(client: &Client, n: usize, big_mb: usize) -> anyhow::Result<Vec<Row>> {
    let script = format!(
        "cd /root && echo hi > small.txt && head -c {big_mb}000000 /dev/zero > big.bin && \
         (setsid python3 -m http.server 8080 >/dev/null 2>&1 &) && \
         for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:8080/small.txt && exit 0; sleep 0.1; done; exit 1"
    );
    let req: mags_api::CreateJobRequest =
        serde_json::from_value(serde_json::json!({"script": script, "persistent": true}))?;
    let id = client.create_job(&req).await?.request_id;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let st = client.job_status(&id).await?;
        if st.status == mags_api::JobState::Running && st.exit_code == Some(0) {
            break;
        }
        if st.exit_code.is_some_and(|c| c != 0) || st.status.is_final() || Instant::now() > deadline
        {
            bail!("the URL bench sandbox did not come up: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = client.access(&id, 8080).await?.url;
    let http = mags_e2e::loopback_client().build()?;

    let mut proxied = Vec::new();
    for _ in 0..n + 3 {
        let t = Instant::now();
        let r = http.get(format!("{url}/small.txt")).send().await?;
        anyhow::ensure!(r.status() == 200, "proxied GET: {}", r.status());
        r.bytes().await?;
        proxied.push(ms(t.elapsed()));
    }
    // The first requests warm the guest's server up.
    proxied.drain(..3);
    // The same request, made inside the guest by one client process (no
    // process start per request), new connection each time like the proxy.
    let inside = client
        .exec(
            &id,
            &format!(
                "python3 -c 'import http.client, time\n\
                 for i in range({}):\n\
                 \x20   c = http.client.HTTPConnection(\"127.0.0.1\", 8080); t = time.perf_counter()\n\
                 \x20   c.request(\"GET\", \"/small.txt\"); c.getresponse().read(); c.close()\n\
                 \x20   print((time.perf_counter() - t) * 1000)'",
                n + 3
            ),
            Some(600.0),
        )
        .await?;
    let mut direct: Vec<f64> = inside
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .collect();
    if direct.len() < 4 {
        bail!(
            "in-guest timing failed: {} {}",
            inside.stdout,
            inside.stderr
        );
    }
    direct.drain(..3);
    let direct_median = median(&direct);

    let t = Instant::now();
    let r = http.get(format!("{url}/big.bin")).send().await?;
    anyhow::ensure!(r.status() == 200, "download: {}", r.status());
    let got = r.bytes().await.context("download body")?.len();
    let big_ms = ms(t.elapsed());
    anyhow::ensure!(got == big_mb * 1_000_000, "download was {got} bytes");
    client.stop(&id).await?;
    Ok(vec![
        Row::new("URL proxy: request round trip (GET, small file)", proxied)
            .vs("the same GET inside the guest", direct_median),
        Row::new(
            "baseline: the same GET inside the guest (python client)",
            direct,
        ),
        Row::new(format!("URL proxy: download {big_mb} MB"), vec![big_ms])
            .note(format!("{:.1} MB/s", big_mb as f64 / (big_ms / 1000.0))),
    ])
}
