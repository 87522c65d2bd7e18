//! `mags status`, `mags logs`, `mags list`, `mags rm`.

use super::{connect, print_json};
use mags_api::{JobStatus, OutputStream};

/// `mags status <name|id>`.
pub async fn status(job: &str, json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    let s = client.job_status(&id).await?;
    if json {
        print_json(&s)?;
        return Ok(0);
    }
    let state = match s.exit_code {
        Some(code) => format!("{} (exit {code})", s.status),
        None => s.status.to_string(),
    };
    let sleep = s.persistent.then(|| {
        if s.no_sleep {
            "never".to_string()
        } else {
            s.idle_timeout_secs.map_or_else(
                || "when idle (server default)".into(),
                |t| format!("after {t} s idle"),
            )
        }
    });
    let output = if s.output_pruned {
        "deleted by the server's retention".to_string()
    } else {
        format!("{} bytes stored", s.output_bytes)
    };
    let rows: [(&str, Option<String>); 15] = [
        ("id", Some(s.request_id.clone())),
        ("name", s.name.clone()),
        ("status", Some(state)),
        ("workspace", s.workspace_id.clone()),
        ("vm", s.vm_id.clone()),
        (
            "kind",
            Some(
                if s.persistent {
                    "persistent sandbox"
                } else {
                    "one-shot job"
                }
                .into(),
            ),
        ),
        ("sleeps", sleep),
        ("startup", s.startup_command.clone()),
        ("vm time", Some(format!("{:.1} s", s.vm_seconds))),
        ("created", Some(s.created_at.clone())),
        ("started", s.started_at.clone()),
        ("finished", s.finished_at.clone()),
        (
            "duration",
            s.script_duration_ms.map(|ms| format!("{ms} ms")),
        ),
        ("error", s.error.clone()),
        ("output", Some(output)),
    ];
    for (k, v) in rows {
        if let Some(v) = v {
            println!("{:<10} {v}", format!("{k}:"));
        }
    }
    Ok(0)
}

/// `mags rm <name|id>`: deletes an ended job and its output.
pub async fn rm(job: &str, json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    let r = client.delete_job(&id).await?;
    if json {
        print_json(&r)?;
    } else {
        println!("{} ({} bytes of output)", r.message, r.output_bytes);
    }
    Ok(0)
}

/// `mags logs <name|id>`: stdout lines to stdout, the others to stderr.
pub async fn logs(job: &str, json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let id = client.resolve_job(job).await?;
    let logs = client.job_logs(&id).await?;
    if json {
        print_json(&logs)?;
        return Ok(0);
    }
    for e in &logs.logs {
        match e.source {
            OutputStream::Stdout => println!("{}", e.message),
            OutputStream::Stderr => eprintln!("{}", e.message),
            OutputStream::System => eprintln!("mags: {}", e.message),
        }
    }
    Ok(0)
}

/// `mags list`.
pub async fn list(page: u32, page_size: u32, json: bool) -> anyhow::Result<u8> {
    let (client, _) = connect().await?;
    let list = client.list_jobs(page, page_size).await?;
    if json {
        print_json(&list)?;
        return Ok(0);
    }
    if list.jobs.is_empty() {
        println!("no jobs yet");
        return Ok(0);
    }
    print!("{}", table(&list.jobs));
    let shown = list.jobs.len() as i64;
    let before = i64::from(page.saturating_sub(1)) * i64::from(list.page_size);
    if before + shown < list.total {
        println!(
            "({} of {} jobs; more with --page {})",
            shown,
            list.total,
            page + 1
        );
    }
    Ok(0)
}

/// A plain aligned table of jobs.
fn table(jobs: &[JobStatus]) -> String {
    let header = ["ID", "NAME", "STATUS", "EXIT", "CREATED"];
    let rows: Vec<[String; 5]> = jobs
        .iter()
        .map(|j| {
            [
                j.request_id.clone(),
                j.name.clone().unwrap_or_else(|| "-".into()),
                j.status.to_string(),
                j.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                j.created_at
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " "),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for r in &rows {
        line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mags_api::JobState;

    #[test]
    fn table_is_aligned() {
        let j = JobStatus {
            request_id: "0b7f3c3e-4a59-4c7b-9a57-1d8e5c3f2a10".into(),
            id: "0b7f3c3e-4a59-4c7b-9a57-1d8e5c3f2a10".into(),
            name: Some("build".into()),
            status: JobState::Completed,
            vm_id: None,
            workspace_id: None,
            base_workspace_id: None,
            persistent: false,
            subdomain: None,
            url: None,
            exit_code: Some(0),
            script_duration_ms: None,
            disk_gb: 2,
            created_at: "2025-01-02T03:04:05.678Z".into(),
            started_at: None,
            finished_at: None,
            error: None,
            no_sleep: false,
            startup_command: None,
            idle_timeout_secs: None,
            timeout: None,
            vm_seconds: 0.0,
            output_bytes: 0,
            output_pruned: false,
        };
        let t = table(&[j]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID"));
        assert_eq!(lines[0].find("NAME"), lines[1].find("build"));
        assert!(lines[1].ends_with("2025-01-02 03:04:05"));
    }
}
