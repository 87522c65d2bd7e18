//! Agent integrations: `mags mcp` driven by the reference MCP client (the
//! `mcp` Python package, `MAGS_TEST_MCP_PYTHON` from `scripts/test-mcp`)
//! against a real server and real VMs, and `mags setup-claude`.

use mags_e2e::{bin, stdout, Server};
use std::process::Command;

const CLIENT: &str = r#"
import asyncio, json, sys
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

def text(r):
    return {"text": r.content[0].text, "error": r.is_error, "data": r.structured_content}

async def main():
    params = StdioServerParameters(command=sys.argv[1], args=["mcp"], env=json.loads(sys.argv[2]))
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            out["server"] = init.server_info.name
            out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
            out["run"] = text(await s.call_tool("run_script", {"script": "echo hi-$WHO; echo oops >&2; exit 3", "env": {"WHO": "mcp"}}))
            out["new"] = text(await s.call_tool("new_sandbox", {"name": "mcpbox"}))
            out["write"] = text(await s.call_tool("write_file", {"sandbox": "mcpbox", "path": "/root/d/n.txt", "content": "it's\nhere\n"}))
            out["read"] = text(await s.call_tool("read_file", {"sandbox": "mcpbox", "path": "/root/d/n.txt"}))
            out["exec"] = text(await s.call_tool("exec", {"sandbox": "mcpbox", "command": "cat /root/d/n.txt | wc -l"}))
            out["url"] = text(await s.call_tool("get_url", {"sandbox": "mcpbox", "port": 8080}))
            out["missing"] = text(await s.call_tool("read_file", {"sandbox": "mcpbox", "path": "/nope"}))
            out["stop"] = text(await s.call_tool("stop_sandbox", {"sandbox": "mcpbox"}))
            out["unknown_sandbox"] = text(await s.call_tool("exec", {"sandbox": "nosuch", "command": "true"}))
    print(json.dumps(out))

asyncio.run(main())
"#;

#[test]
fn an_mcp_client_runs_code_and_uses_a_sandbox() {
    let py = match std::env::var("MAGS_TEST_MCP_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "MAGS_TEST_MCP_PYTHON is not set: run `eval \"$(scripts/test-mcp)\"` to install \
             the reference MCP client first"
        ),
    };
    let server = Server::start(&[]);
    let env = serde_json::json!({
        "MAGS_API_URL": server.url,
        "MAGS_API_TOKEN": server.token,
        "MAGS_HOME": server.dir.path().join("home"),
    });
    let o = Command::new(py)
        .args(["-c", CLIENT])
        .arg(bin("mags"))
        .arg(env.to_string())
        .output()
        .expect("python");
    assert!(
        o.status.success(),
        "MCP client failed: {}\nserver log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        server.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["server"], "mags", "{v}");
    assert_eq!(
        v["tools"],
        serde_json::json!([
            "exec",
            "get_url",
            "new_sandbox",
            "read_file",
            "run_script",
            "stop_sandbox",
            "write_file"
        ])
    );
    assert_eq!(v["run"]["data"]["exit_code"], 3, "{v}");
    assert_eq!(v["run"]["data"]["stdout"], "hi-mcp\n");
    assert_eq!(v["run"]["data"]["stderr"], "oops\n");
    assert_eq!(v["run"]["error"], false);
    assert_eq!(v["new"]["error"], false, "{v}");
    assert_eq!(v["read"]["text"], "it's\nhere\n", "{v}");
    assert_eq!(
        v["exec"]["data"]["stdout"].as_str().map(str::trim),
        Some("2")
    );
    let url = v["url"]["data"]["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("http://") && url.contains(".localhost"),
        "{v}"
    );
    assert_eq!(v["missing"]["error"], true, "{v}");
    assert_eq!(v["stop"]["error"], false, "{v}");
    assert_eq!(v["unknown_sandbox"]["error"], true, "{v}");
    let unknown = v["unknown_sandbox"]["text"].as_str().unwrap_or_default();
    assert!(unknown.contains("nosuch"), "{unknown}");
}

#[test]
fn setup_claude_installs_a_skill() {
    let home = tempfile::tempdir().expect("tempdir");
    let run = || {
        Command::new(bin("mags"))
            .arg("setup-claude")
            .env("HOME", home.path())
            .env_remove("CLAUDE_CONFIG_DIR")
            .output()
            .expect("mags")
    };
    let o = run();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let skill = home.path().join(".claude/skills/mags/SKILL.md");
    let text = std::fs::read_to_string(&skill).expect("skill written");
    assert!(text.starts_with("---\nname: mags\ndescription: "), "{text}");
    assert!(text.contains("mags run") && text.contains("mags exec"));
    assert!(stdout(&o).contains(&skill.display().to_string()));
    // Running it again is fine and leaves one skill file.
    assert!(run().status.success());
    let entries = std::fs::read_dir(skill.parent().expect("dir"))
        .expect("dir")
        .count();
    assert_eq!(entries, 1);
}
