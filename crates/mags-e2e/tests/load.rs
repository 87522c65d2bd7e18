//! The load test: 50 one-shot jobs submitted at once to the real `magsd`
//! on this machine's real VMs all end `completed` with their own output
//! (queueing is fine, failure is not). Correctness only; the throughput is
//! measured by `mags-bench --load`.

use mags_e2e::{load, Server};

const JOBS: usize = 50;

#[test]
fn fifty_jobs_submitted_at_once_all_complete_with_their_own_output() {
    let server = Server::start(&[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = mags_client::Client::new(&server.url, &server.token).expect("client");
    let run = rt.block_on(load::run(&client, JOBS));
    assert!(
        run.failures.is_empty(),
        "{} of {JOBS} jobs failed:\n{}\nlog:\n{}",
        run.failures.len(),
        run.failures.join("\n"),
        server.log()
    );
    eprintln!(
        "{JOBS} jobs in {:.1} s ({:.2} jobs/s; all accepted after {:.2} s)",
        run.wall.as_secs_f64(),
        run.throughput(),
        run.submitted.as_secs_f64()
    );
    // Every job is listed as completed, none left waiting.
    let list = rt.block_on(client.list_jobs(1, 100)).expect("list jobs");
    assert_eq!(list.total, JOBS as i64);
    assert!(
        list.jobs
            .iter()
            .all(|j| j.status == mags_api::JobState::Completed),
        "{:?}",
        list.jobs.iter().map(|j| j.status).collect::<Vec<_>>()
    );
}
