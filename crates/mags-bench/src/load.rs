//! The load row: 50 one-shot jobs submitted at once to the release
//! `magsd` (the same run as the e2e load test, `mags_e2e::load`), wall
//! time until all ended, and the throughput that gives.

use crate::report::{median, Row};
use mags_e2e::load;

/// Jobs per run.
pub const JOBS: usize = 50;

/// `runs` load runs; fails if any job of any run did not complete with
/// its output.
pub async fn rows(client: &mags_client::Client, runs: usize) -> anyhow::Result<Vec<Row>> {
    let (mut walls, mut rates, mut accepted) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let run = load::run(client, JOBS).await;
        anyhow::ensure!(
            run.failures.is_empty(),
            "load run {r}: {} jobs failed: {}",
            run.failures.len(),
            run.failures.join("; ")
        );
        eprintln!(
            "  load run {r}: {JOBS} jobs in {:.1} s, {:.2} jobs/s",
            run.wall.as_secs_f64(),
            run.throughput()
        );
        walls.push(crate::ms(run.wall));
        accepted.push(crate::ms(run.submitted));
        rates.push(run.throughput());
    }
    let note = format!(
        "{:.2} jobs/s (median run); all {JOBS} accepted in {:.0} ms",
        median(&rates),
        median(&accepted)
    );
    Ok(vec![Row::new(
        format!("load: {JOBS} one-shot jobs submitted at once, until all completed"),
        walls,
    )
    .note(note)])
}
