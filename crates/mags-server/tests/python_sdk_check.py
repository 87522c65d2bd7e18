"""The published Python SDK (magpie-mags 1.3.8), unmodified, against our
server. Run by python_sdk.rs with MAGS_API_URL and MAGS_API_TOKEN set; the
server uses the fake executor, whose `echo`/`exit`/`sleep` suffice here."""
import sys
from mags import Mags
from mags.client import MagsError
m = Mags()
r = m.run_and_wait("echo Hello World\necho warn >&2\nexit 0", timeout=20, poll_interval=0.2, name="py")
print("run_and_wait:", r["status"], r["exit_code"], [l["message"] for l in r["logs"]])
assert r["status"] == "completed" and r["exit_code"] == 0
assert [l["message"] for l in r["logs"]] == ["Hello World", "warn"]
r = m.run_and_wait("exit 7", timeout=20, poll_interval=0.2)
assert r["status"] == "error" and r["exit_code"] == 7, r
jobs = m.list_jobs(page_size=5)
assert jobs["total"] == 2 and jobs["jobs"][0]["request_id"] == r["request_id"], jobs
assert m.find_job("py")["name"] == "py"
st = m.status(m._resolve_job_id("py"))
assert st["status"] == "completed"
u = m.usage(window_days=3)
assert u["total_jobs"] == 2, u
new = m.new("myws", timeout=10, poll_interval=0.2)  # waits for running + vm_id
assert new["status"] == "running", new
assert m.find_job("myws")["status"] == "running"
e = m.exec("myws", "echo hi\necho oops >&2\nexit 4", timeout=10)
assert e == {"exit_code": 4, "output": "hi\n", "stderr": "oops\n"}, e
u = m.update_job(new["request_id"], no_sleep=True, startup_command="echo up")
assert u["no_sleep"] is True and u["startup_command"] == "echo up", u
assert m.sync(new["request_id"])["success"] is True
s = m.stop("myws")
assert s["success"] is True and s["status"] == "completed", s
assert m.find_job("myws")["status"] == "completed"
try:
    m.exec("myws", "echo")
    sys.exit("exec on a stopped sandbox accepted")
except MagsError as e:
    assert "completed" in str(e), e
try:
    m.exec("nosuch", "echo")
    sys.exit("exec on an unknown name accepted")
except MagsError as e:
    assert "nosuch" in str(e), e
try:
    m._request("POST", "/mags-jobs", json={"script": "echo", "no_sleep": True})
    sys.exit("no_sleep without persistent accepted")
except MagsError as e:
    assert e.status_code == 400, e
# The docs: new('my-project'), then new('my-project', persistent=True):
# the second takes the workspace over, the first ends completed.
first = m.new("myws2", timeout=10, poll_interval=0.2)
second = m.new("myws2", persistent=True, timeout=20, poll_interval=0.2)
assert second["request_id"] != first["request_id"], second
assert m.status(first["request_id"])["status"] == "completed"
replaced = [l["message"] for l in m.logs(first["request_id"])["logs"]]
assert any("replaced by job " + second["request_id"] in l for l in replaced), replaced
assert m.find_job("myws2")["request_id"] == second["request_id"]
try:
    m._request("POST", "/mags-jobs", json={"script": ""})
    sys.exit("empty script accepted")
except MagsError as e:
    assert e.status_code == 400 and "script" in str(e), e
try:
    m.status("00000000-0000-4000-8000-000000000000")
    sys.exit("unknown id found")
except MagsError as e:
    assert e.status_code == 404, e
bad = Mags(api_token="mags_nope")
try:
    bad.list_jobs()
    sys.exit("bad token accepted")
except MagsError as e:
    assert e.status_code == 401, e
print("OK")
