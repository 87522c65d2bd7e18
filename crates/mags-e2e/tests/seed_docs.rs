//! The public docs (`shared/reference/mags-docs.md`) run literally against
//! our server on real VMs: each shell example is the docs' text, run by
//! `bash -c` with the real `mags` first on PATH and MAGS_API_URL/TOKEN set
//! (what `mags login` would save), in a directory holding the files the
//! examples upload; then asserts on what it printed or left behind. The
//! Python snippet runs through the published `magpie-mags` client, the
//! Node one through our SDK installed under the docs' package name.
//!
//! Departures from the page, each needed by the page itself:
//! - File Upload's third example (`npm install` in /root) runs after the
//!   Complex Project Workflow's step 1: with only config.json and app.js
//!   uploaded there is no package.json, and npm fails on any host;
//! - steps 2 and 3 run a server in the foreground (`node server.js`), so
//!   the test stops following each once it has answered, as a user does;
//! - the Python snippet's `url()` is left out (after its own `stop()`, and
//!   1.3.8 rewrites the URL into the hosted domain); its `cron_delete`
//!   gets the id `cron_create` returned; the Node snippet's two
//!   `const result` are put in blocks (as written it is a SyntaxError).

use mags_e2e::{bin, loopback_client, output_within, stderr, stdout, Server};
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a docs' shell example as written.
fn sh_cmd(server: &Server, cwd: &Path, script: &str) -> Command {
    let mags_dir = bin("mags").parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        mags_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.args(["-c", script])
        .current_dir(cwd)
        .env("PATH", path)
        .env("MAGS_API_URL", &server.url)
        .env("MAGS_API_TOKEN", &server.token)
        .env("MAGS_HOME", server.dir.path().join("home"))
        .env_remove("MAGS_TOKEN")
        .stdin(Stdio::null());
    c
}

fn sh(server: &Server, cwd: &Path, script: &str) -> Output {
    let t0 = Instant::now();
    let o = output_within(&mut sh_cmd(server, cwd, script), Duration::from_secs(600));
    eprintln!(
        "[{:>6.1}s] {}",
        t0.elapsed().as_secs_f64(),
        script.lines().next().unwrap_or("")
    );
    o
}

fn sh_ok(server: &Server, cwd: &Path, script: &str) -> String {
    let o = sh(server, cwd, script);
    assert!(
        o.status.success(),
        "{script}\nexit {:?}\nstdout: {}\nstderr: {}\nserver log:\n{}",
        o.status,
        stdout(&o),
        stderr(&o),
        mags_e2e::tail(&server.log(), 40)
    );
    stdout(&o)
}

/// Starts a docs' example that runs a server in the foreground and
/// returns once its stdout and stderr together showed `until` (the lines
/// seen so far); the follower is killed (the sandbox stays up).
fn follow_until(server: &Server, cwd: &Path, script: &str, until: &[&str]) -> String {
    let mut child = sh_cmd(server, cwd, &format!("exec 2>&1; {script}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = String::new();
    while !until.iter().all(|u| seen.contains(u)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{script}: no {until:?} in:\n{seen}\n{}",
                    mags_e2e::tail(&server.log(), 40)
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

const SERVER_JS: &str = r#"const http = require('http');
const isNumber = require('is-number');
const cfg = require('./config.json');
http.createServer((req, res) => res.end('hello from my-project ' + isNumber(cfg.port) + '\n'))
  .listen(3000, () => console.log('listening on 3000'));
"#;

#[test]
fn every_docs_example_runs_as_written() {
    let started = Instant::now();
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).expect("write");
    write("script.py", "print('hello from script.py')\n");
    write("data.csv", "name,score\nada,3\nbob,5\n");
    write(
        "analyze.py",
        "import csv\nrows = list(csv.reader(open('data.csv')))\nprint(len(rows) - 1, 'rows')\n",
    );
    write("config.json", "{\"port\": 3000}\n");
    write("app.js", "console.log('app')\n");
    write("server.js", SERVER_JS);
    write(
        "package.json",
        "{\"name\": \"my-project\", \"dependencies\": {\"is-number\": \"7.0.0\"}}\n",
    );

    // Quickstart.
    assert_eq!(
        sh_ok(&server, d, "mags run 'echo Hello World'"),
        "Hello World\n"
    );

    // Ephemeral Mode.
    let out = sh_ok(&server, d, "mags run -e 'uname -a && df -h'");
    assert!(
        out.starts_with("Linux mags-vm ") && out.contains("Filesystem"),
        "{out}"
    );

    // File Upload: single and multiple files.
    let out = sh_ok(&server, d, "mags run -f script.py 'python3 script.py'");
    assert_eq!(out, "hello from script.py\n");
    let out = sh_ok(
        &server,
        d,
        "mags run -f analyze.py -f data.csv 'python3 analyze.py'",
    );
    assert_eq!(out, "2 rows\n");

    // Data Analysis Workflow.
    let out = sh_ok(
        &server,
        d,
        r#"mags run -w analysis -f data.csv 'python3 -c "
import csv
with open(\"/root/data.csv\") as f:
    reader = csv.reader(f)
    for row in reader:
        print(row)
"'"#,
    );
    assert_eq!(out, "['name', 'score']\n['ada', '3']\n['bob', '5']\n");

    // Complex Project Workflow.
    sh_ok(
        &server,
        d,
        "mags run -w my-project -p -f server.js -f package.json \\\n  'cp *.js *.json /root/ && cd /root && npm install'",
    );
    // (config.json for server.js, and the third File Upload example.)
    sh_ok(
        &server,
        d,
        "mags run -w my-project -p -f config.json -f app.js 'cp *.js *.json /root/ && cd /root && npm install'",
    );
    let seen = follow_until(
        &server,
        d,
        "mags run -w my-project -p 'cd /root && node server.js'",
        &["listening on 3000"],
    );
    assert!(
        !seen.contains("Cannot find module"),
        "step 2 sees step 1's node_modules: {seen}"
    );
    let seen = follow_until(
        &server,
        d,
        "mags run -w my-project -p --url --port 3000 'cd /root && node server.js'",
        &["listening on 3000", "URL (port 3000): "],
    );
    let url = seen
        .lines()
        .find_map(|l| l.split("URL (port 3000): ").nth(1))
        .expect("URL line")
        .trim()
        .to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let body = rt.block_on(async {
        let client = loopback_client().build().expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => break r.text().await.expect("body"),
                other if Instant::now() > deadline => panic!("{url}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
    assert_eq!(body, "hello from my-project true\n");
    let out = sh_ok(
        &server,
        d,
        "mags cron add --name \"my-server\" --schedule \"0 */6 * * *\" -w my-project \\\n  'cd /root && node server.js'",
    );
    assert!(out.contains("cron job my-server"), "{out}");
    // One live job on my-project after four takeovers; the earlier ones
    // ended completed.
    let list: serde_json::Value =
        serde_json::from_str(&sh_ok(&server, d, "mags list --json --page-size 100")).expect("json");
    let mine: Vec<&serde_json::Value> = list["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["workspace_id"] == "my-project")
        .collect();
    let live = mine
        .iter()
        .filter(|j| matches!(j["status"].as_str(), Some("running" | "sleeping")))
        .count();
    assert_eq!((mine.len(), live), (4, 1), "{mine:?}");
    assert!(
        mine.iter().skip(1).all(|j| j["status"] == "completed"),
        "{mine:?}"
    );

    // Workspace Modes.
    sh_ok(&server, d, "mags run -w myproject 'echo local > /root/a'");
    assert_eq!(
        sh_ok(&server, d, "mags run -w myproject 'cat /root/a'"),
        "local\n"
    );
    sh_ok(&server, d, "mags run -w golden -p 'echo gold > /root/g'");
    sh_ok(&server, d, "mags sync golden"); // a base is its stored version
    let out = sh_ok(
        &server,
        d,
        "mags run --base golden 'cat /root/g; echo changed > /root/g'",
    );
    assert_eq!(out, "gold\n");
    let out = sh_ok(
        &server,
        d,
        "mags run --base golden -w fork-1 'cat /root/g; echo f1 > /root/f'",
    );
    assert_eq!(out, "gold\n");
    let out = sh_ok(
        &server,
        d,
        "mags run --base golden -w fork-1 -p 'cat /root/g /root/f'",
    );
    assert_eq!(out, "gold\nf1\n");
    assert_eq!(
        sh_ok(&server, d, "mags exec golden 'cat /root/g'"),
        "gold\n",
        "the base never changes"
    );
    let o = sh(&server, d, "mags run -e -w myproject 'true'");
    assert!(
        !o.status.success() && stderr(&o).contains("--ephemeral"),
        "{}",
        stderr(&o)
    );

    // Cron Scheduling.
    let out = sh_ok(
        &server,
        d,
        "mags cron add --name \"daily-backup\" --schedule \"0 0 * * *\" 'tar czf /root/backup.tar.gz /root/data'",
    );
    assert!(out.contains("daily-backup"), "{out}");
    let out = sh_ok(
        &server,
        d,
        "mags cron add --name \"health-check\" --schedule \"*/5 * * * *\" -w monitors 'curl -sf https://myapp.com/health'",
    );
    assert!(out.contains("health-check"), "{out}");
    let list = sh_ok(&server, d, "mags cron list");
    for name in ["daily-backup", "health-check", "my-server"] {
        assert!(list.contains(name), "{list}");
    }
    let id = list
        .lines()
        .find(|l| l.starts_with("health-check"))
        .and_then(|l| l.split_whitespace().last())
        .expect("id")
        .to_string();
    assert!(sh_ok(&server, d, &format!("mags cron disable {id}")).contains("disabled"));
    assert!(sh_ok(&server, d, &format!("mags cron enable {id}")).contains("enabled"));
    sh_ok(&server, d, &format!("mags cron remove {id}"));
    assert!(!sh_ok(&server, d, "mags cron list").contains("health-check"));

    // Python SDK, through the published client.
    let py = server.python(
        r#"
import json, os, sys
os.chdir(sys.argv[1])
from mags import Mags

mags = Mags()  # uses MAGS_API_TOKEN env var

# Run a script and wait for result
result = mags.run_and_wait('echo Hello World')
print(result['logs'], file=sys.stderr)
hello = result['logs']

# Create a sandbox (local disk)
mags.new('my-project')

# Create with S3 persistence
mags.new('my-project', persistent=True)

# Execute a command on an existing sandbox
result = mags.exec('my-project', 'ls -la /root')
print(result['output'], file=sys.stderr)
listing = result['output']

# Stop a running job
mags.stop('my-project')

# Find a job by name or workspace
job = mags.find_job('my-project')

# Upload files and run
file_ids = mags.upload_files(['script.py', 'data.csv'])
ran = mags.run('python3 script.py', file_ids=file_ids)

# Cron jobs
created = mags.cron_create(name='daily-backup-py', cron_expression='0 0 * * *',
                 script='tar czf backup.tar.gz /data', workspace_id='my-ws')
cron_id = created['id']
mags.cron_delete(cron_id)

import time
for _ in range(600):
    st = mags.status(ran['request_id'])
    if st['status'] in ('completed', 'error'):
        break
    time.sleep(0.5)
print(json.dumps({
    "hello": [l['message'] for l in hello],
    "listing": listing,
    "job": job['status'],
    "ran": st['status'],
    "ran_logs": [l['message'] for l in mags.logs(ran['request_id'])['logs']],
    "crons": [c['name'] for c in mags.cron_list()['cron_jobs']],
}))
"#,
        &[d.as_os_str()],
    );
    assert_eq!(py["hello"][0], "Hello World", "{py}");
    assert!(
        py["listing"]
            .as_str()
            .unwrap_or_default()
            .contains("node_modules"),
        "{py}"
    );
    assert_eq!(py["job"], "completed", "{py}");
    assert_eq!(py["ran"], "completed", "{py}");
    assert_eq!(py["ran_logs"][0], "hello from script.py", "{py}");
    assert!(!py["crons"].to_string().contains("daily-backup-py"), "{py}");

    // Node.js SDK: ours, installed under the docs' package name.
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/node");
    let built = Command::new("bash")
        .args([
            "-c",
            "npm ci --no-audit --no-fund >/dev/null && npm run build >/dev/null",
        ])
        .current_dir(&sdk)
        .status()
        .expect("npm");
    assert!(built.success(), "building sdk/node failed");
    let modules = d.join("node_modules/@magpiecloud");
    std::fs::create_dir_all(&modules).expect("mkdir");
    std::os::unix::fs::symlink(sdk.canonicalize().expect("sdk"), modules.join("mags"))
        .expect("link");
    write(
        "snippet.cjs",
        r#"(async () => {
const Mags = require('@magpiecloud/mags');

const mags = new Mags({
  apiToken: process.env.MAGS_API_TOKEN
});

{
// Run a script
const result = await mags.runAndWait('echo Hello World');
console.log(result.logs.map((l) => l.message).join('|'));
}

{
// Upload files
const fileIds = await mags.uploadFiles(['script.py', 'data.csv']);
const result = await mags.run('python3 script.py', { fileIds });
const done = await mags.runAndWait('true');
console.log(typeof result.request_id, done.status);
}

// Cron jobs
const created = await mags.cronCreate({
  name: 'daily-backup-node',
  cronExpression: '0 0 * * *',
  script: 'tar czf backup.tar.gz /data',
  workspaceId: 'my-workspace'
});
const { cron_jobs } = await mags.cronList();
console.log(cron_jobs.some((c) => c.name === 'daily-backup-node'));
await mags.cronDelete(created.id);
})().catch((e) => { console.error(e); process.exit(1); });
"#,
    );
    let out = sh_ok(&server, d, "node snippet.cjs");
    assert_eq!(out, "Hello World\nstring completed\ntrue\n");

    eprintln!("seed_docs: every example ran in {:?}", started.elapsed());
}
