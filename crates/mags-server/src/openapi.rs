//! The OpenAPI 3 document of the REST API, generated from the `mags-api`
//! types (their JSON schemas come from `schemars`, which reads the same
//! serde attributes that shape the wire). `magsd openapi` prints it; the
//! committed `openapi.json` must equal it, and every operation in it must
//! exist on the live router (tests/openapi.rs).

use mags_api as api;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// What `/access` answers: a URL, or SSH access for port 22.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum AccessAnswer {
    Url(api::AccessResponse),
    Ssh(api::SshAccessResponse),
}

/// One operation: method, path (under `/api/v1` unless it starts with
/// `/health`), summary, request body, success status and body.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    status: u16,
    response: Value,
    /// Response media type (JSON unless a stream).
    media: &'static str,
    /// Query parameters (OpenAPI parameter objects).
    query: Vec<Value>,
}

struct Doc {
    gen: SchemaGenerator,
    ops: Vec<Op>,
}

impl Doc {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.gen.subschema_for::<T>().to_value()
    }

    #[allow(clippy::too_many_arguments)]
    fn op<Req: JsonSchema, Resp: JsonSchema>(
        &mut self,
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        with_body: bool,
        status: u16,
        media: &'static str,
    ) {
        let request = with_body.then(|| self.schema::<Req>());
        let response = self.schema::<Resp>();
        self.ops.push(Op {
            method,
            path,
            summary,
            request,
            status,
            response,
            media,
            query: Vec::new(),
        });
    }

    /// Documents the fields of `Q` as the query parameters of the operation
    /// added last.
    fn query<Q: JsonSchema>(&mut self) {
        let schema = SchemaSettings::openapi3()
            .into_generator()
            .into_root_schema_for::<Q>()
            .to_value();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut params = Vec::new();
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let mut prop = prop.clone();
                let description = prop
                    .as_object_mut()
                    .and_then(|p| p.remove("description"))
                    .unwrap_or(Value::Null);
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "schema": prop,
                });
                if !description.is_null() {
                    p["description"] = description;
                }
                params.push(p);
            }
        }
        if let Some(op) = self.ops.last_mut() {
            op.query = params;
        }
    }
}

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// `{"success": true, "message": ...}`-style answers without a named type.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct DeletedResponse {
    success: bool,
    message: String,
}

/// Multipart upload body: one part named `file`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The file (100 MB at most); repeat the part for several files.
    #[schemars(extend("format" = "binary"))]
    file: String,
}

/// The whole document.
pub fn document() -> Value {
    let settings = SchemaSettings::openapi3();
    let mut d = Doc {
        gen: settings.into_generator(),
        ops: Vec::new(),
    };
    use api::*;
    d.op::<(), Health>(
        "get",
        "/health",
        "Liveness and version (no token)",
        false,
        200,
        JSON,
    );
    d.op::<CreateJobRequest, CreateJobResponse>(
        "post",
        "/mags-jobs",
        "Submit a job",
        true,
        202,
        JSON,
    );
    d.op::<(), JobList>(
        "get",
        "/mags-jobs",
        "List jobs, newest first (page, page_size)",
        false,
        200,
        JSON,
    );
    d.query::<JobListQuery>();
    d.op::<(), UsageResponse>(
        "get",
        "/mags-jobs/usage",
        "Jobs and VM seconds (window_days)",
        false,
        200,
        JSON,
    );
    d.op::<(), PoolStatus>(
        "get",
        "/mags-jobs/pool-status",
        "Warm pool state",
        false,
        200,
        JSON,
    );
    d.op::<(), JobStatus>(
        "get",
        "/mags-jobs/{id}/status",
        "A job's status",
        false,
        200,
        JSON,
    );
    d.op::<(), LogsResponse>(
        "get",
        "/mags-jobs/{id}/logs",
        "A job's output as log lines (streamed; offset, limit)",
        false,
        200,
        JSON,
    );
    d.query::<LogsQuery>();
    d.op::<(), OutputEvent>(
        "get",
        "/mags-jobs/{id}/output",
        "A job's output as it is produced (NDJSON events; after=SEQ resumes)",
        false,
        200,
        NDJSON,
    );
    d.op::<UpdateJobRequest, JobStatus>(
        "patch",
        "/mags-jobs/{id}",
        "Change a sandbox's startup command or sleep setting",
        true,
        200,
        JSON,
    );
    d.op::<(), DeleteJobResponse>(
        "delete",
        "/mags-jobs/{id}",
        "Delete an ended job and its stored output (409 while live; 404 unknown)",
        false,
        200,
        JSON,
    );
    d.op::<ExecRequest, ExecResponse>(
        "post",
        "/mags-jobs/{id}/exec",
        "Run a command in a sandbox (wakes it)",
        true,
        200,
        JSON,
    );
    d.op::<ExecRequest, ExecEvent>(
        "post",
        "/mags-jobs/{id}/exec/stream",
        "Run a command, output streamed (NDJSON events)",
        true,
        200,
        NDJSON,
    );
    d.op::<(), ActionResponse>(
        "post",
        "/mags-jobs/{id}/stop",
        "Stop a job or sandbox (syncs a persistent workspace)",
        false,
        200,
        JSON,
    );
    d.op::<(), ActionResponse>(
        "post",
        "/mags-jobs/{id}/sync",
        "Save a sandbox's workspace to storage now",
        false,
        200,
        JSON,
    );
    d.op::<AccessRequest, AccessAnswer>(
        "post",
        "/mags-jobs/{id}/access",
        "A public URL for a port; port 22: SSH host, port and a key for this sandbox",
        true,
        200,
        JSON,
    );
    d.op::<TtyQuery, TtyServerMsg>(
        "get",
        "/mags-jobs/{id}/exec/tty",
        "A command on a terminal: WebSocket upgrade (query: command, rows, cols, term); \
         binary frames are keystrokes and output, text frames JSON resize/exit/error",
        false,
        101,
        JSON,
    );
    d.op::<BrowserRequest, BrowserSession>(
        "post",
        "/mags-browser",
        "Start a browser session (or find the live one of that name): CDP endpoints behind a per-session secret",
        true,
        200,
        JSON,
    );
    d.op::<CreateAliasRequest, AliasInfo>(
        "post",
        "/mags-url-aliases",
        "A stable subdomain that follows a workspace's live job",
        true,
        200,
        JSON,
    );
    d.op::<(), AliasList>(
        "get",
        "/mags-url-aliases",
        "List URL aliases, a page (offset, limit; total counts all)",
        false,
        200,
        JSON,
    );
    d.query::<PageQuery>();
    d.op::<(), DeletedResponse>(
        "delete",
        "/mags-url-aliases/{subdomain}",
        "Remove a URL alias",
        false,
        200,
        JSON,
    );
    d.op::<UploadForm, UploadResponse>(
        "post",
        "/mags-files",
        "Upload files (multipart, one or more parts `file`)",
        true,
        200,
        JSON,
    );
    d.op::<(), WorkspaceList>(
        "get",
        "/mags-workspaces",
        "List workspaces, a page (offset, limit; total counts all)",
        false,
        200,
        JSON,
    );
    d.query::<PageQuery>();
    d.op::<(), WorkspaceActionResponse>(
        "delete",
        "/mags-workspaces/{id}",
        "Delete a workspace and its stored data (409 while in use)",
        false,
        200,
        JSON,
    );
    d.op::<ResizeRequest, WorkspaceActionResponse>(
        "post",
        "/mags-workspaces/{id}/resize",
        "Grow a workspace's disk",
        true,
        200,
        JSON,
    );
    d.op::<CronCreateRequest, CronJob>("post", "/mags-cron", "Schedule a job", true, 201, JSON);
    d.op::<(), CronList>(
        "get",
        "/mags-cron",
        "List cron jobs, a page (offset, limit; total counts all)",
        false,
        200,
        JSON,
    );
    d.query::<PageQuery>();
    d.op::<(), CronJob>(
        "get",
        "/mags-cron/{id}",
        "A cron job (id or name)",
        false,
        200,
        JSON,
    );
    d.op::<CronUpdateRequest, CronJob>(
        "patch",
        "/mags-cron/{id}",
        "Change a cron job (any fields)",
        true,
        200,
        JSON,
    );
    d.op::<(), DeletedResponse>(
        "delete",
        "/mags-cron/{id}",
        "Delete a cron job",
        false,
        200,
        JSON,
    );
    d.op::<(), WhoAmI>("get", "/whoami", "The token's user", false, 200, JSON);
    d.op::<(), TokenList>(
        "get",
        "/mags-tokens",
        "The caller's API tokens, a page (never the secrets); an admin may pass user=NAME",
        false,
        200,
        JSON,
    );
    d.query::<TokenListQuery>();
    d.op::<CreateTokenRequest, CreatedToken>(
        "post",
        "/mags-tokens",
        "A new token (shown once) for the caller; an admin may name another user",
        true,
        201,
        JSON,
    );
    d.op::<(), RevokedToken>(
        "delete",
        "/mags-tokens/{id}",
        "Revoke one of the caller's tokens (id or unique prefix; an admin: any token)",
        false,
        200,
        JSON,
    );
    d.op::<(), UserList>(
        "get",
        "/mags-users",
        "List users, a page (offset, limit; admin only: 403 otherwise)",
        false,
        200,
        JSON,
    );
    d.query::<PageQuery>();
    d.op::<CreateUserRequest, UserInfo>(
        "post",
        "/mags-users",
        "Add a user (admin only: 403 otherwise)",
        true,
        201,
        JSON,
    );
    d.op::<(), AuditList>(
        "get",
        "/mags-audit",
        "Audit events, oldest first: the caller's own; an admin's sees all \
         (user, since=RFC 3339 or 30m/24h/7d, action, limit)",
        false,
        200,
        JSON,
    );
    d.query::<AuditQuery>();
    let error = d.schema::<ErrorBody>();
    render(d, error)
}

fn render(mut d: Doc, error: Value) -> Value {
    let mut paths = Map::new();
    for op in std::mem::take(&mut d.ops) {
        let (full, public) = if op.path == "/health" {
            (op.path.to_string(), true)
        } else {
            (format!("/api/v1{}", op.path), false)
        };
        let mut o = json!({
            "summary": op.summary,
            "operationId": operation_id(op.method, op.path),
            "responses": {
                op.status.to_string(): {
                    "description": "success",
                    "content": {op.media: {"schema": op.response}},
                },
                "default": {
                    "description": "an error (4xx/5xx), always JSON",
                    "content": {JSON: {"schema": error}},
                },
            },
        });
        let mut params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(op.query);
        if !params.is_empty() {
            o["parameters"] = Value::Array(params);
        }
        if let Some(req) = op.request {
            let media = if op.path == "/mags-files" {
                "multipart/form-data"
            } else {
                JSON
            };
            o["requestBody"] = json!({"required": true, "content": {media: {"schema": req}}});
        }
        if public {
            o["security"] = json!([]);
        } else {
            o["responses"]["429"] = json!({
                "description": "over a per-user limit (request rate, VMs running, jobs \
                    waiting); retry after `Retry-After` seconds",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {JSON: {"schema": error}},
            });
        }
        if matches!(
            (op.method, op.path),
            ("post", "/mags-jobs") | ("post", "/mags-workspaces/{id}/resize")
        ) {
            o["responses"]["507"] = json!({
                "description": "the host's data dir cannot hold this disk (after the disks \
                    of running and sleeping sandboxes); the error names the free space",
                "content": {JSON: {"schema": error}},
            });
        }
        paths
            .entry(full)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item")
            .insert(op.method.to_string(), o);
    }
    let schemas: Map<String, Value> = d.gen.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Mags API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sandboxes in microVMs: jobs, long-lived sandboxes, workspaces, \
                files, URLs and cron. Every request but /health needs `Authorization: Bearer <token>`. \
                Request bodies are at most 2 MiB (uploads: their own limit), else 413; a disk \
                quota exceeded is a 403 (stored job output counts; DELETE an ended job to \
                free it); a disk the host cannot hold is a 507.",
        },
        "servers": [{"url": "http://127.0.0.1:7070"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

/// `get /mags-jobs/{id}/status` -> `get_mags_jobs_id_status`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(seg.chars().filter(|c| !matches!(c, '{' | '}')).map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        }));
    }
    id
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_text() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("serializable");
    s.push('\n');
    s
}
