"""The SDK against the server's OpenAPI document (``openapi.json`` at the
repository root, generated from the server's types; ``MAGS_OPENAPI`` names
another copy): a field the API has that the SDK's types or parameters lack,
or one the SDK has that the API lacks, fails here, unless ``ALLOW`` below
says why the two differ. No server needed: the request bodies are checked
against a stub that records what the clients send.

The sync and async clients are both checked, and against each other."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from mags import AsyncMags, Mags, types

DOC_PATH = Path(
    os.environ.get("MAGS_OPENAPI") or Path(__file__).resolve().parents[3] / "openapi.json"
)
DOC = json.loads(DOC_PATH.read_text())

#: Each client method that makes one REST call, and that call.
OPERATIONS: Dict[str, Tuple[str, str]] = {
    "run": ("post", "/api/v1/mags-jobs"),
    "status": ("get", "/api/v1/mags-jobs/{id}/status"),
    "logs": ("get", "/api/v1/mags-jobs/{id}/logs"),
    "list_jobs": ("get", "/api/v1/mags-jobs"),
    "update_job": ("patch", "/api/v1/mags-jobs/{id}"),
    "stop": ("post", "/api/v1/mags-jobs/{id}/stop"),
    "delete_job": ("delete", "/api/v1/mags-jobs/{id}"),
    "sync": ("post", "/api/v1/mags-jobs/{id}/sync"),
    "usage": ("get", "/api/v1/mags-jobs/usage"),
    "pool_status": ("get", "/api/v1/mags-jobs/pool-status"),
    "exec": ("post", "/api/v1/mags-jobs/{id}/exec"),
    "exec_stream": ("post", "/api/v1/mags-jobs/{id}/exec/stream"),
    "resize": ("post", "/api/v1/mags-workspaces/{id}/resize"),
    "enable_access": ("post", "/api/v1/mags-jobs/{id}/access"),
    "url_alias_create": ("post", "/api/v1/mags-url-aliases"),
    "url_alias_list": ("get", "/api/v1/mags-url-aliases"),
    "url_alias_delete": ("delete", "/api/v1/mags-url-aliases/{subdomain}"),
    "browser": ("post", "/api/v1/mags-browser"),
    "list_workspaces": ("get", "/api/v1/mags-workspaces"),
    "delete_workspace": ("delete", "/api/v1/mags-workspaces/{id}"),
    "cron_create": ("post", "/api/v1/mags-cron"),
    "cron_list": ("get", "/api/v1/mags-cron"),
    "cron_get": ("get", "/api/v1/mags-cron/{id}"),
    "cron_update": ("patch", "/api/v1/mags-cron/{id}"),
    "cron_delete": ("delete", "/api/v1/mags-cron/{id}"),
    "list_tokens": ("get", "/api/v1/mags-tokens"),
    "create_token": ("post", "/api/v1/mags-tokens"),
    "revoke_token": ("delete", "/api/v1/mags-tokens/{id}"),
    "audit": ("get", "/api/v1/mags-audit"),
}

# The deliberate differences, and why. Request bodies, by method:
#   renamed:     SDK parameter -> the API field it is sent as;
#   client_only: parameters the client uses itself (never sent);
#   fixed:       fields the client always sends with one value;
#   not_offered: API fields the SDK has no parameter for.
# Result types, by TypedDict: sdk_only / api_only field names.
ALLOW: Dict[str, Dict[str, Any]] = {
    "run": {
        # `timeout` is already run_and_wait's polling limit.
        "renamed": {"script_timeout": "timeout"},
        # Keeps nothing: the client drops workspace_id (the published client's option).
        "client_only": {"ephemeral"},
        # Scripts are always sent inline.
        "fixed": {"type"},
    },
    "exec": {"client_only": {"stream"}},  # picks /exec/stream instead
    "resize": {"client_only": {"timeout", "poll_interval"}},  # wait for a new sandbox
    "browser": {"client_only": {"timeout"}},  # the HTTP wait (Chromium starts slowly)
    # The published client's signature: a job is created enabled;
    # cron_update(id, enabled=False) pauses it.
    "cron_create": {"not_offered": {"enabled"}},
    # An admin's option (a token for another user); the SDK makes yours.
    "create_token": {"not_offered": {"user"}},
    # The contract's refusal `{"success": false, "error"}` (hosted servers;
    # this one answers a 4xx), read by url().
    "AccessInfo": {"sdk_only": {"error"}},
}

#: Results the client assembles itself (the published client's shapes),
#: not the server's JSON.
CLIENT_SHAPES = {"RunResult", "ExecResult", "NewResult"}

#: Stream events: (dataclass, operation, the ``event`` it decodes). The
#: class is the event, so no field holds ``event``; ``data_b64`` is decoded
#: into ``data``; exec output has no ``seq``/``timestamp`` (left None).
OUTPUT = ("get", "/api/v1/mags-jobs/{id}/output")
EXEC_STREAM = ("post", "/api/v1/mags-jobs/{id}/exec/stream")
STREAM_EVENTS = [
    (types.OutputChunk, OUTPUT, "output", {"api_only": {"event", "data_b64"}}),
    (types.StatusChange, OUTPUT, "status", {"api_only": {"event"}}),
    (types.JobExit, OUTPUT, "exit", {"api_only": {"event"}}),
    (
        types.OutputChunk,
        EXEC_STREAM,
        "output",
        {"api_only": {"event", "data_b64"}, "sdk_only": {"seq", "timestamp"}},
    ),
    (types.ExecExit, EXEC_STREAM, "exit", {"api_only": {"event"}}),
]
#: Stream events the SDK raises instead of returning.
RAISED_EVENTS = {(EXEC_STREAM, "error")}


# ── the document ─────────────────────────────────────────────────────


def resolve(s: Dict[str, Any]) -> Dict[str, Any]:
    while "$ref" in s:
        s = DOC["components"]["schemas"][s["$ref"].rsplit("/", 1)[-1]]
    return s


def fields(s: Dict[str, Any]) -> Set[str]:
    """An object schema's property names; a union's, all of its variants'."""
    s = resolve(s)
    out = set(s.get("properties", {}))
    for key in ("anyOf", "oneOf", "allOf"):
        for v in s.get(key, []):
            out |= fields(v)
    return out


def object_of(s: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The object schema a property holds (itself, its array's items, the
    non-null one of a nullable union), or None for scalars and maps."""
    s = resolve(s)
    if s.get("type") == "array":
        return object_of(s.get("items", {}))
    variants = [v for v in s.get("anyOf", s.get("oneOf", [])) if resolve(v).get("type") != "null"]
    if len(variants) == 1 and "properties" not in s:
        return object_of(variants[0])
    return s if fields(s) else None


def operation(op: Tuple[str, str]) -> Dict[str, Any]:
    method, path = op
    there = method in DOC["paths"].get(path, {})
    assert there, f"{method.upper()} {path} is not in {DOC_PATH}"
    return DOC["paths"][path][method]


def body_schema(op: Tuple[str, str]) -> Optional[Dict[str, Any]]:
    content = operation(op).get("requestBody", {}).get("content", {})
    return content["application/json"]["schema"] if "application/json" in content else None


def answer_schema(op: Tuple[str, str], content_type: str = "application/json") -> Dict[str, Any]:
    for code, r in operation(op)["responses"].items():
        if code.startswith("2") and content_type in r.get("content", {}):
            return r["content"][content_type]["schema"]
    raise AssertionError(f"{op} has no 2xx {content_type} answer in {DOC_PATH}")


# ── the SDK ──────────────────────────────────────────────────────────


def is_typeddict(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, dict) and hasattr(t, "__total__")


def typeddicts_in(hint: Any) -> List[type]:
    """The TypedDicts a hint names (through Optional, List, Union)."""
    if is_typeddict(hint):
        return [hint]
    return [t for arg in typing.get_args(hint) for t in typeddicts_in(arg)]


def keys(td: type) -> Set[str]:
    return set(td.__required_keys__) | set(td.__optional_keys__)


def path_param(op: Tuple[str, str]) -> bool:
    return "{" in op[1]


def sent_params(cls: type, name: str) -> Optional[Set[str]]:
    """The API field names a method's parameters stand for (None: it
    passes ``**fields`` through as given)."""
    allow = ALLOW.get(name, {})
    params = list(inspect.signature(getattr(cls, name)).parameters.values())[1:]
    if path_param(OPERATIONS[name]):
        params = params[1:]  # the id, name or subdomain in the path
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    renamed = allow.get("renamed", {})
    return {
        renamed.get(p.name, p.name) for p in params if p.name not in allow.get("client_only", set())
    }


def diff(what: str, sdk: Set[str], api: Set[str], allow: Dict[str, Set[str]]) -> List[str]:
    out = []
    missing = api - sdk - set(allow.get("api_only", set()))
    extra = sdk - api - set(allow.get("sdk_only", set()))
    if missing:
        out.append(f"{what}: the API has {sorted(missing)}, the SDK does not")
    if extra:
        out.append(f"{what}: the SDK has {sorted(extra)}, the API does not ({DOC_PATH.name})")
    return out


def compare_typeddict(td: type, schema: Dict[str, Any], seen: Dict[str, str]) -> List[str]:
    """``td``'s keys against ``schema``'s properties, and, through the
    fields both have, the TypedDicts inside it against the schemas there."""
    s = resolve(schema)
    if td.__name__ in seen:
        return []
    seen[td.__name__] = schema.get("$ref", "(inline)").rsplit("/", 1)[-1]
    problems = diff(f"types.{td.__name__}", keys(td), fields(s), ALLOW.get(td.__name__, {}))
    hints = typing.get_type_hints(td)
    props: Dict[str, Any] = {}
    for key in ("anyOf", "oneOf", "allOf"):
        for v in s.get(key, []):
            props.update(resolve(v).get("properties", {}))
    props.update(s.get("properties", {}))
    for name in keys(td) & set(props):
        inner = object_of(props[name])
        for sub in typeddicts_in(hints[name]):
            if inner is None:
                problems.append(
                    f"types.{td.__name__}.{name} is a {sub.__name__}, the API's is no object"
                )
            else:
                problems += compare_typeddict(
                    sub, props[name] if "$ref" in props[name] else inner, seen
                )
    return problems


# ── the checks ───────────────────────────────────────────────────────


def test_the_operations_exist_and_both_clients_have_them_alike():
    for op in OPERATIONS.values():
        operation(op)
    public = [n for n, f in vars(Mags).items() if callable(f) and not n.startswith("_")]
    assert set(OPERATIONS) <= set(public)
    for name in public:
        if name == "close":
            continue  # AsyncMags.aclose
        sync, aio = getattr(Mags, name), getattr(AsyncMags, name)
        assert inspect.signature(sync).parameters == inspect.signature(aio).parameters, name
        returns = [typeddicts_in(typing.get_type_hints(f)["return"]) for f in (sync, aio)]
        assert returns[0] == returns[1], name
        assert inspect.iscoroutinefunction(aio) and not inspect.iscoroutinefunction(sync), name


def test_every_request_field_is_a_parameter_and_every_parameter_a_field():
    problems = []
    for name, op in OPERATIONS.items():
        schema = body_schema(op)
        params = sent_params(Mags, name)
        if schema is None or params is None:
            continue
        allow = ALLOW.get(name, {})
        api = fields(schema) - set(allow.get("fixed", set()))
        problems += diff(
            f"Mags.{name}()", params, api, {"api_only": allow.get("not_offered", set())}
        )
    assert not problems, "\n".join(problems)


def test_every_result_type_matches_its_answer_and_every_type_is_checked():
    problems: List[str] = []
    seen: Dict[str, str] = {}
    for name, op in OPERATIONS.items():
        ret = typing.get_type_hints(getattr(Mags, name))["return"]
        for td in typeddicts_in(ret):
            if td.__name__ not in CLIENT_SHAPES:
                problems += compare_typeddict(td, answer_schema(op), seen)
    assert not problems, "\n".join(problems)
    every = {
        n for n, t in vars(types).items() if is_typeddict(t) and t.__module__ == types.__name__
    }
    unchecked = every - set(seen) - CLIENT_SHAPES
    assert not unchecked, f"TypedDicts checked against no schema (map them): {sorted(unchecked)}"


def test_every_stream_event_matches_its_variant():
    problems = []
    covered = set()
    for cls, op, event, allow in STREAM_EVENTS:
        variants = resolve(answer_schema(op, "application/x-ndjson")).get("oneOf", [])
        match = [v for v in variants if event in resolve(v)["properties"]["event"].get("enum", [])]
        assert len(match) == 1, f"{op}: {len(match)} variants of event {event!r}"
        covered.add((op, event))
        names = {f.name for f in dataclasses.fields(cls)}
        problems += diff(
            f"types.{cls.__name__} ({event!r} of {op[1]})", names, fields(match[0]), allow
        )
    assert not problems, "\n".join(problems)
    for op in (OUTPUT, EXEC_STREAM):
        for v in resolve(answer_schema(op, "application/x-ndjson"))["oneOf"]:
            for event in resolve(v)["properties"]["event"]["enum"]:
                known = (op, event) in covered | RAISED_EVENTS
                assert known, f"{op[1]}: no SDK type for event {event!r}"


# ── what the clients send ────────────────────────────────────────────


JOB = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def recorder():
    """A stub server: records each request's method, path and JSON body;
    lists one running job named ``sb``; answers ``{}`` otherwise."""
    seen: List[Tuple[str, str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            seen.append((self.command.lower(), self.path.split("?")[0], body))
            reply: Dict[str, Any] = {}
            if self.command == "GET" and self.path.startswith("/api/v1/mags-jobs?"):
                reply = {"jobs": [{"request_id": JOB, "name": "sb", "status": "running"}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def sample(annotation: Any) -> Any:
    """A value of a parameter's annotation that the client sends."""
    a = str(annotation)
    for key, value in (
        ("Dict", {"K": "v"}),
        ("List", ["x"]),
        ("bool", True),
        ("int", 7),
        ("float", 7.0),
        ("str", "x"),
    ):
        if key in a:
            return value
    raise AssertionError(f"no sample value for a parameter of type {a}")


def arguments(cls: type, name: str) -> Tuple[List[Any], Dict[str, Any]]:
    """Every parameter given (but the client-only ones): the first
    positional one is the path's ``sb``."""
    allow = ALLOW.get(name, {})
    args: List[Any] = []
    kwargs: Dict[str, Any] = {}
    params = list(inspect.signature(getattr(cls, name)).parameters.values())[1:]
    for i, p in enumerate(params):
        if p.name in allow.get("client_only", set()) or p.kind is p.VAR_KEYWORD:
            continue
        value = "sb" if i == 0 and path_param(OPERATIONS[name]) else sample(p.annotation)
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return args, kwargs


def test_every_parameter_reaches_the_body_under_the_apis_name(recorder):
    base, seen = recorder
    with_body = {
        n: op
        for n, op in OPERATIONS.items()
        if body_schema(op) and sent_params(Mags, n) is not None
    }
    assert "run" in with_body and "cron_create" in with_body

    def check(client_name: str, calls: Dict[str, Any]):
        problems = []
        for name, op in with_body.items():
            sent = [
                b for m, p, b in calls[name] if m == op[0] and p.startswith(op[1].split("{")[0])
            ]
            assert sent, f"{client_name}.{name} sent no {op[0].upper()} {op[1]}"
            allow = ALLOW.get(name, {})
            api = fields(body_schema(op))
            problems += diff(
                f"{client_name}.{name}() body",
                set(sent[-1] or {}),
                api,
                {"api_only": allow.get("not_offered", set())},
            )
        assert not problems, "\n".join(problems)

    calls = {}
    with Mags(api_url=base, api_token="t") as m:
        for name in with_body:
            args, kwargs = arguments(Mags, name)
            seen.clear()
            result = getattr(m, name)(*args, **kwargs)
            if hasattr(result, "close"):
                result.close()  # exec_stream's
            calls[name] = list(seen)
    check("Mags", calls)

    async def via_async():
        async with AsyncMags(api_url=base, api_token="t") as a:
            out = {}
            for name in with_body:
                args, kwargs = arguments(AsyncMags, name)
                seen.clear()
                result = await getattr(a, name)(*args, **kwargs)
                if hasattr(result, "aclose"):
                    await result.aclose()
                out[name] = list(seen)
            return out

    check("AsyncMags", asyncio.run(via_async()))
