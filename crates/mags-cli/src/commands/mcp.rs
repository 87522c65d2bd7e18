//! `mags mcp`: a Model Context Protocol server on stdin/stdout, so any
//! MCP-capable agent can run code in Mags sandboxes.
//!
//! JSON-RPC 2.0, one message per line. Requests: `initialize`, `ping`,
//! `tools/list`, `tools/call`; notifications are accepted and ignored.
//! Nothing but protocol goes to stdout (diagnostics go to stderr).

use super::connect;
use super::sandbox::{self, NewArgs};
use base64::Engine as _;
use mags_api::{CreateJobRequest, JobState, OutputStream};
use mags_client::{Client, OutputItem};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Largest stdout or stderr returned to the agent (the rest is cut, saying so).
const MAX_OUTPUT: usize = 100 * 1024;
/// Largest file `write_file` takes or `read_file` returns.
const MAX_FILE: usize = 4 * 1024 * 1024;

/// Serves until stdin ends.
pub async fn serve() -> anyhow::Result<u8> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut client: Option<Client> = None;
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Err(e) => Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
            Ok(msg) => handle(&msg, &mut client).await,
        };
        if let Some(reply) = reply {
            let mut bytes = serde_json::to_vec(&reply)?;
            bytes.push(b'\n');
            out.write_all(&bytes).await?;
            out.flush().await?;
        }
    }
    Ok(0)
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The reply to one message (`None` for a notification).
async fn handle(msg: &Value, client: &mut Option<Client>) -> Option<Value> {
    let id = msg.get("id").cloned()?;
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        return Some(error(id, -32600, "invalid request: no method"));
    };
    let params = msg.get("params").cloned().unwrap_or(Value::Null);
    Some(match method {
        "initialize" => {
            // We implement the tools subset every protocol version shares:
            // answer with the version the client asked for.
            let version = params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("2025-06-18");
            result(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "mags", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "Run code in isolated Mags microVM sandboxes: run_script for \
                        one-off scripts; new_sandbox then exec/read_file/write_file for a machine \
                        that stays up; stop_sandbox when done.",
                }),
            )
        }
        "ping" => result(id, json!({})),
        "tools/list" => result(id, json!({ "tools": tools() })),
        "tools/call" => {
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            if !tools().iter().any(|t| t["name"] == name) {
                return Some(error(id, -32602, &format!("unknown tool {name:?}")));
            }
            let c = match client {
                Some(c) => c.clone(),
                None => match connect().await {
                    Ok((c, _)) => client.insert(c).clone(),
                    Err(e) => return Some(result(id, tool_error(&format!("{e:#}")))),
                },
            };
            match call(&c, name, &args).await {
                Ok(v) => result(id, v),
                Err(e) => result(id, tool_error(&format!("{e:#}"))),
            }
        }
        _ => error(id, -32601, &format!("method {method:?} not found")),
    })
}

/// A tool result the agent sees as a failure.
fn tool_error(message: &str) -> Value {
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

fn tools() -> Vec<Value> {
    let sandbox = json!({"type": "string", "description": "Sandbox name (or job id)."});
    vec![
        json!({
            "name": "run_script",
            "description": "Run a bash script in a fresh, isolated microVM (Debian with python3/pip, \
                node/npm, git, curl) and return its exit code, stdout and stderr.",
            "inputSchema": {"type": "object", "required": ["script"], "properties": {
                "script": {"type": "string"},
                "workspace": {"type": "string", "description": "Name the job and keep files in this \
                    named workspace (a live sandbox of it is taken over, its files kept)."},
                "persistent": {"type": "boolean", "description": "Keep the sandbox up after the \
                    script and sync the workspace to storage."},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
        }),
        json!({
            "name": "new_sandbox",
            "description": "Start a sandbox that stays up (it sleeps when idle and wakes on use); \
                its files live in the workspace of the same name.",
            "inputSchema": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "persistent": {"type": "boolean", "description": "Keep its workspace in storage."},
            }},
        }),
        json!({
            "name": "exec",
            "description": "Run a shell command in a running sandbox (in /root).",
            "inputSchema": {"type": "object", "required": ["sandbox", "command"], "properties": {
                "sandbox": sandbox, "command": {"type": "string"},
                "timeout": {"type": "number", "description": "Seconds (default 30)."},
            }},
        }),
        json!({
            "name": "write_file",
            "description": "Write a text file in a sandbox (parent directories are created).",
            "inputSchema": {"type": "object", "required": ["sandbox", "path", "content"], "properties": {
                "sandbox": sandbox, "path": {"type": "string"}, "content": {"type": "string"},
            }},
        }),
        json!({
            "name": "read_file",
            "description": "Read a file from a sandbox.",
            "inputSchema": {"type": "object", "required": ["sandbox", "path"], "properties": {
                "sandbox": sandbox, "path": {"type": "string"},
            }},
        }),
        json!({
            "name": "get_url",
            "description": "A public URL for a port in a sandbox (e.g. a web server you started \
                there); requests to it wake the sandbox.",
            "inputSchema": {"type": "object", "required": ["sandbox", "port"], "properties": {
                "sandbox": sandbox, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            }},
        }),
        json!({
            "name": "stop_sandbox",
            "description": "Stop a sandbox (a persistent workspace is synced first).",
            "inputSchema": {"type": "object", "required": ["sandbox"], "properties": {"sandbox": sandbox}},
        }),
    ]
}

fn arg<'a>(args: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("missing string argument {key:?}"))
}

/// Text for the agent plus the same facts as structured content.
fn text_result(text: String, structured: Value) -> Value {
    json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": false})
}

fn clip(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned();
    if bytes.len() > MAX_OUTPUT {
        format!("{s}\n[... {} more bytes cut]", bytes.len() - MAX_OUTPUT)
    } else {
        s
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn call(c: &Client, name: &str, args: &Value) -> anyhow::Result<Value> {
    match name {
        "run_script" => run_script(c, args).await,
        "new_sandbox" => {
            let name = arg(args, "name")?.to_string();
            let persist = args
                .get("persistent")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let new = NewArgs {
                name: name.clone(),
                persist,
                base: None,
                disk: None,
                no_sleep: false,
                egress: Default::default(),
                wait_secs: 300,
                url: None,
            };
            let id = sandbox::start(c, new, |_| {}).await?;
            Ok(text_result(
                format!("sandbox {name} is running (job {id})"),
                json!({"sandbox": name, "job_id": id}),
            ))
        }
        "exec" => {
            let timeout = args.get("timeout").and_then(Value::as_f64);
            let r = exec(c, arg(args, "sandbox")?, arg(args, "command")?, timeout).await?;
            let (code, out, err) = r;
            Ok(text_result(
                format!("exit code {code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"),
                json!({"exit_code": code, "stdout": out, "stderr": err}),
            ))
        }
        "write_file" => {
            let (path, content) = (arg(args, "path")?, arg(args, "content")?);
            anyhow::ensure!(
                content.len() <= MAX_FILE,
                "content is over {MAX_FILE} bytes"
            );
            let b64 = base64::engine::general_purpose::STANDARD.encode(content);
            let cmd = format!(
                "mkdir -p -- \"$(dirname -- {p})\" && printf %s {b64} | base64 -d > {p}",
                p = quote(path)
            );
            let (code, _, err) = exec(c, arg(args, "sandbox")?, &cmd, Some(60.0)).await?;
            anyhow::ensure!(code == 0, "writing {path} failed: {err}");
            Ok(text_result(
                format!("wrote {} bytes to {path}", content.len()),
                json!({"path": path, "bytes": content.len()}),
            ))
        }
        "read_file" => {
            let path = arg(args, "path")?;
            let cmd = format!(
                "test $(stat -c %s -- {p}) -le {MAX_FILE} || {{ echo 'file is over {MAX_FILE} bytes' >&2; exit 3; }}; base64 -w0 -- {p}",
                p = quote(path)
            );
            let (code, out, err) = exec(c, arg(args, "sandbox")?, &cmd, Some(60.0)).await?;
            anyhow::ensure!(code == 0, "reading {path} failed: {}", err.trim());
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(out.trim())
                .map_err(|e| anyhow::anyhow!("bad file data: {e}"))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{path} is not UTF-8 text"))?;
            Ok(text_result(
                text.clone(),
                json!({"path": path, "content": text}),
            ))
        }
        "get_url" => {
            let port = args
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| anyhow::anyhow!("port must be 1-65535"))?;
            let id = c.resolve_job(arg(args, "sandbox")?).await?;
            let r = c.access(&id, port).await?;
            Ok(text_result(
                r.url.clone(),
                json!({"url": r.url, "port": r.port}),
            ))
        }
        "stop_sandbox" => {
            let id = c.resolve_job(arg(args, "sandbox")?).await?;
            let r = c.stop(&id).await?;
            Ok(text_result(
                r.message.clone(),
                json!({"job_id": id, "success": r.success}),
            ))
        }
        other => anyhow::bail!("unknown tool {other:?}"),
    }
}

async fn exec(
    c: &Client,
    sandbox: &str,
    command: &str,
    timeout: Option<f64>,
) -> anyhow::Result<(i32, String, String)> {
    let id = c.resolve_job(sandbox).await?;
    let r = c.exec(&id, command, timeout).await?;
    Ok((
        r.exit_code,
        clip(r.stdout.as_bytes()),
        clip(r.stderr.as_bytes()),
    ))
}

async fn run_script(c: &Client, args: &Value) -> anyhow::Result<Value> {
    let mut req = CreateJobRequest::new(arg(args, "script")?);
    req.workspace_id = args
        .get("workspace")
        .and_then(Value::as_str)
        .map(str::to_string);
    req.name = req.workspace_id.clone();
    req.persistent = args
        .get("persistent")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(env) = args.get("env").and_then(Value::as_object) {
        for (k, v) in env {
            let v = v
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("env values are strings"))?;
            req.environment.insert(k.clone(), v.to_string());
        }
    }
    let job = c.create_job(&req).await?.request_id;
    let mut follow = c.follow_output(&job);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (status, code, why) = loop {
        match follow.next().await? {
            Some(OutputItem::Output { stream, data }) => match stream {
                OutputStream::Stdout => out.extend_from_slice(&data),
                OutputStream::Stderr | OutputStream::System => err.extend_from_slice(&data),
            },
            Some(OutputItem::Status(_)) => {}
            Some(OutputItem::Exit {
                status,
                exit_code,
                error,
            }) => break (status, exit_code, error),
            None => anyhow::bail!("the output of job {job} ended without a final status"),
        }
    };
    let (out, err) = (clip(&out), clip(&err));
    let mut text = format!(
        "job {job} {status}, exit code {}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        code.map_or("-".to_string(), |c| c.to_string())
    );
    if let Some(why) = &why {
        text.push_str(&format!("\n--- error ---\n{why}"));
    }
    let structured = json!({"job_id": job, "status": status.to_string(), "exit_code": code,
        "stdout": out, "stderr": err, "error": why});
    if status == JobState::Error && code.is_none() {
        return Ok(
            json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": true}),
        );
    }
    Ok(text_result(text, structured))
}
