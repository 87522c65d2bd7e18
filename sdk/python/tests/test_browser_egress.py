"""Browser sessions and per-job egress lists, against the real server."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from conftest import WAIT, messages


def test_browser_session_answers_cdp_and_is_reused_by_name(m, unique):
    b = m.browser(unique)
    try:
        assert b["success"] is True and b["name"] == unique
        assert b["wsEndpoint"].startswith(("ws://", "wss://"))
        assert "/devtools/browser/" in b["wsEndpoint"]
        # `<sub>.localhost` needs no DNS: ask loopback with the URL's Host.
        u = urlsplit(b["cdpHttpUrl"])
        version = httpx.get(
            f"http://127.0.0.1:{u.port}{u.path}", headers={"Host": u.netloc}, timeout=30
        ).json()
        assert "Chrom" in version["Browser"]
        assert m.browser(unique)["request_id"] == b["request_id"]
    finally:
        m.stop(b["request_id"])


def test_egress_lists_narrow_what_a_job_reaches(m):
    fetch = "curl -s -o /dev/null -w '%{http_code}\\n' "
    script = fetch + "https://pypi.org/simple/pip/; " + fetch + "http://deb.debian.org/debian/"
    r = m.run_and_wait(script, egress_allow=["deb.debian.org"], timeout=WAIT, poll_interval=0.2)
    codes = messages(r, "stdout")
    assert len(codes) == 2 and codes[0] != "200" and codes[1] == "200", r
    r = m.run_and_wait(script, egress_deny=["deb.debian.org"], timeout=WAIT, poll_interval=0.2)
    codes = messages(r, "stdout")
    assert len(codes) == 2 and codes[0] == "200" and codes[1] != "200", r
