"""URLs come from the server's answers, never from a built-in domain.

main's magsd has no /access or /mags-url-aliases yet, so these calls are
checked against a small stub server that records what the SDK sends."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mags import AsyncMags, Mags, MagsError

JOB = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def stub():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}")
            seen.append((self.path, body))
            if self.path.endswith("/access") and body.get("port") == 9999:
                answer = {"success": False, "error": "port 9999 is not open"}
            elif self.path.endswith("/access"):
                answer = {"success": True, "url": "http://sub.apps.example.test:7070",
                          "port": body["port"], "subdomain": "sub"}
            else:
                answer = {"id": "a1", "subdomain": body["subdomain"],
                          "url": "http://" + body["subdomain"] + ".apps.example.test"}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            seen.append((self.path, None))
            data = json.dumps({"request_id": JOB, "status": "running", "url": None}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_url_is_the_servers_own(stub):
    base, seen = stub
    m = Mags(api_url=base, api_token="t")
    r = m.url(JOB, port=3000)
    assert r["url"] == "http://sub.apps.example.test:7070"
    assert seen[0] == (f"/api/v1/mags-jobs/{JOB}/access", {"port": 3000})
    with pytest.raises(MagsError, match="port 9999 is not open"):
        m.url(JOB, port=9999)

    alias = m.url_alias_create("docs", "ws1")
    assert alias["url"] == "http://docs.apps.example.test"
    assert seen[-1] == ("/api/v1/mags-url-aliases", {"subdomain": "docs", "workspace_id": "ws1"})

    async def via_async():
        async with AsyncMags(api_url=base, api_token="t") as a:
            return await a.url(JOB)

    import asyncio

    assert asyncio.run(via_async())["url"] == "http://sub.apps.example.test:7070"
