//! The load run: `n` one-shot jobs submitted at once through the REST
//! client, each followed to its end and checked for its own output. Used
//! by `tests/load.rs` (correctness) and `mags-bench --load` (throughput).

use mags_api::{CreateJobRequest, JobState, OutputStream};
use mags_client::{Client, OutputItem};
use std::time::{Duration, Instant};

/// What a load run saw.
#[derive(Debug)]
pub struct LoadRun {
    pub jobs: usize,
    /// From the first submission to the last job's end.
    pub wall: Duration,
    /// Until every job was accepted (202).
    pub submitted: Duration,
    /// Jobs that did not end `completed` with their expected output, and why.
    pub failures: Vec<String>,
}

impl LoadRun {
    /// Jobs per second over the whole run.
    pub fn throughput(&self) -> f64 {
        self.jobs as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }
}

/// The script of job `i` and the stdout it must produce.
pub fn job(i: usize) -> (String, String) {
    (
        format!("echo job-{i}; echo $(( {i} * {i} ))"),
        format!("job-{i}\n{}\n", i * i),
    )
}

/// Submits `n` jobs at once, follows each to its end, checks each.
pub async fn run(client: &Client, n: usize) -> LoadRun {
    let started = Instant::now();
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = client.clone();
        submits.spawn(async move {
            let (script, _) = job(i);
            let mut req = CreateJobRequest::new(script);
            req.name = Some(format!("load-{i}"));
            (i, client.create_job(&req).await)
        });
    }
    let mut failures = Vec::new();
    let mut ids = Vec::new();
    while let Some(joined) = submits.join_next().await {
        match joined {
            Ok((i, Ok(created))) => ids.push((i, created.request_id)),
            Ok((i, Err(e))) => failures.push(format!("job {i}: not accepted: {e}")),
            Err(e) => failures.push(format!("a submitting task failed: {e}")),
        }
    }
    let submitted = started.elapsed();
    let mut follows = tokio::task::JoinSet::new();
    for (i, id) in ids {
        let client = client.clone();
        follows.spawn(async move { (i, id.clone(), follow(&client, &id).await) });
    }
    while let Some(joined) = follows.join_next().await {
        match joined {
            Ok((i, id, Ok((status, out)))) => {
                let want = job(i).1;
                if status != JobState::Completed || out != want {
                    failures.push(format!(
                        "job {i} ({id}): {status}, stdout {out:?}, expected {want:?}"
                    ));
                }
            }
            Ok((i, id, Err(e))) => failures.push(format!("job {i} ({id}): {e}")),
            Err(e) => failures.push(format!("a following task failed: {e}")),
        }
    }
    LoadRun {
        jobs: n,
        wall: started.elapsed(),
        submitted,
        failures,
    }
}

/// The job's final status and its stdout.
async fn follow(client: &Client, id: &str) -> Result<(JobState, String), String> {
    let mut f = client.follow_output(id);
    let mut out = Vec::new();
    loop {
        match f.next().await.map_err(|e| e.to_string())? {
            Some(OutputItem::Output {
                stream: OutputStream::Stdout,
                data,
            }) => out.extend_from_slice(&data),
            Some(OutputItem::Exit { status, .. }) => {
                return Ok((status, String::from_utf8_lossy(&out).into_owned()))
            }
            Some(_) => {}
            None => return Err("the output ended without the job's end".into()),
        }
    }
}
