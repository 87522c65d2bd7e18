// The SDK against the server's OpenAPI document (openapi.json at the
// repository root, generated from the server's types; MAGS_OPENAPI names
// another copy): a field the API has that src/types.ts or a method's
// options lack, or one the SDK has that the API lacks, fails here, unless
// ALLOW below says why the two differ. The sources are read with the
// TypeScript compiler's parser; the request bodies are checked against a
// stub that records what the built client sends. No server needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Mags } from "../dist/esm/index.js";

const require = createRequire(import.meta.url);
const ts = require("typescript");
const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const DOC_PATH = process.env.MAGS_OPENAPI || here("../../../openapi.json");
const DOC = JSON.parse(readFileSync(DOC_PATH, "utf8"));

/** Each client method that makes one REST call, and that call. */
const OPERATIONS = {
  run: ["post", "/api/v1/mags-jobs"],
  status: ["get", "/api/v1/mags-jobs/{id}/status"],
  logs: ["get", "/api/v1/mags-jobs/{id}/logs"],
  listJobs: ["get", "/api/v1/mags-jobs"],
  updateJob: ["patch", "/api/v1/mags-jobs/{id}"],
  stop: ["post", "/api/v1/mags-jobs/{id}/stop"],
  deleteJob: ["delete", "/api/v1/mags-jobs/{id}"],
  sync: ["post", "/api/v1/mags-jobs/{id}/sync"],
  usage: ["get", "/api/v1/mags-jobs/usage"],
  poolStatus: ["get", "/api/v1/mags-jobs/pool-status"],
  exec: ["post", "/api/v1/mags-jobs/{id}/exec"],
  execStream: ["post", "/api/v1/mags-jobs/{id}/exec/stream"],
  enableAccess: ["post", "/api/v1/mags-jobs/{id}/access"],
  urlAliasCreate: ["post", "/api/v1/mags-url-aliases"],
  urlAliasList: ["get", "/api/v1/mags-url-aliases"],
  urlAliasDelete: ["delete", "/api/v1/mags-url-aliases/{subdomain}"],
  browser: ["post", "/api/v1/mags-browser"],
  listWorkspaces: ["get", "/api/v1/mags-workspaces"],
  deleteWorkspace: ["delete", "/api/v1/mags-workspaces/{id}"],
  cronCreate: ["post", "/api/v1/mags-cron"],
  cronList: ["get", "/api/v1/mags-cron"],
  cronGet: ["get", "/api/v1/mags-cron/{id}"],
  cronUpdate: ["patch", "/api/v1/mags-cron/{id}"],
  cronDelete: ["delete", "/api/v1/mags-cron/{id}"],
  listTokens: ["get", "/api/v1/mags-tokens"],
  createToken: ["post", "/api/v1/mags-tokens"],
  revokeToken: ["delete", "/api/v1/mags-tokens/{id}"],
  audit: ["get", "/api/v1/mags-audit"],
};

// The deliberate differences, and why (names in snake_case, as sent).
// Request bodies, by method: renamed (option -> the API field it is sent
// as), client_only (used by the client, never sent), fixed (always sent
// with one value), not_offered (API fields with no option). Result types,
// by interface: sdk_only / api_only field names.
const ALLOW = {
  run: {
    // `timeout` is already runAndWait's polling limit.
    renamed: { script_timeout: "timeout" },
    // Keeps nothing: the client drops workspaceId (the published client's option).
    client_only: ["ephemeral"],
    // Scripts are always sent inline.
    fixed: ["type"],
  },
  browser: { client_only: ["timeout"] }, // the HTTP wait (Chromium starts slowly)
  // As the published client: a job is created enabled; cronUpdate(id, {enabled: false}) pauses it.
  cronCreate: { not_offered: ["enabled"] },
  // An admin's option (a token for another user); the SDK makes yours.
  createToken: { not_offered: ["user"] },
  // The contract's refusal `{success: false, error}` (hosted servers; this
  // one answers a 4xx), read by url().
  AccessInfo: { sdk_only: ["error"] },
};

/** Results the client assembles itself (the published client's shapes). */
const CLIENT_SHAPES = new Set(["RunResult", "ExecResult", "NewResult"]);

// Stream events: [SDK shape, operation, the `event` it decodes, allowed].
// The SDK's `type` is the API's `event`; `data_b64` is decoded into `data`
// (`text` is `data` as UTF-8); exec output has no `seq`/`timestamp`.
const OUTPUT = ["get", "/api/v1/mags-jobs/{id}/output"];
const EXEC_STREAM = OPERATIONS.execStream;
const EVENT = { renamed: { type: "event" }, api_only: ["data_b64"], sdk_only: ["text"] };
const STREAM_EVENTS = [
  ["OutputChunk", OUTPUT, "output", EVENT],
  ["StatusChange", OUTPUT, "status", EVENT],
  ["JobExit", OUTPUT, "exit", EVENT],
  ["OutputChunk", EXEC_STREAM, "output", { ...EVENT, sdk_only: ["text", "seq", "timestamp"] }],
  // Kept on the stream object as `exitCode` and `timedOut` (streams.ts).
  ["class ExecStream", EXEC_STREAM, "exit", { api_only: ["event"] }],
];
/** Stream events the SDK throws instead of returning. */
const RAISED_EVENTS = new Set([`${EXEC_STREAM[1]} error`]);

// ── the document ─────────────────────────────────────────────────────

function resolve(s) {
  while (s && s.$ref) s = DOC.components.schemas[s.$ref.split("/").pop()];
  return s ?? {};
}

/** An object schema's property names; a union's, all of its variants'. */
function fields(s) {
  s = resolve(s);
  const out = new Set(Object.keys(s.properties ?? {}));
  for (const key of ["anyOf", "oneOf", "allOf"]) for (const v of s[key] ?? []) for (const f of fields(v)) out.add(f);
  return out;
}

/** Name -> property schema, through unions. */
function properties(s) {
  s = resolve(s);
  const out = {};
  for (const key of ["anyOf", "oneOf", "allOf"]) for (const v of s[key] ?? []) Object.assign(out, properties(v));
  return Object.assign(out, s.properties ?? {});
}

/** The object schema a property holds (its array's items, the non-null
 * variant of a nullable union), or null for scalars and maps. */
function objectOf(s) {
  s = resolve(s);
  if (s.type === "array") return objectOf(s.items);
  const variants = (s.anyOf ?? s.oneOf ?? []).filter((v) => resolve(v).type !== "null");
  if (variants.length === 1 && !s.properties) return objectOf(variants[0]);
  return fields(s).size ? s : null;
}

function operation([method, path]) {
  const op = DOC.paths[path]?.[method];
  assert.ok(op, `${method.toUpperCase()} ${path} is not in ${DOC_PATH}`);
  return op;
}

function bodySchema(op) {
  return operation(op).requestBody?.content?.["application/json"]?.schema ?? null;
}

function answerSchema(op, type = "application/json") {
  for (const [code, r] of Object.entries(operation(op).responses)) {
    if (code.startsWith("2") && r.content?.[type]) return r.content[type].schema;
  }
  assert.fail(`${op} has no 2xx ${type} answer in ${DOC_PATH}`);
}

// ── the SDK's sources ────────────────────────────────────────────────

const sources = Object.fromEntries(
  ["types", "client", "streams"].map((n) => {
    const file = here(`../src/${n}.ts`);
    return [n, ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true)];
  }),
);
const interfaces = new Map();
for (const src of Object.values(sources)) {
  for (const st of src.statements) if (ts.isInterfaceDeclaration(st)) interfaces.set(st.name.text, st);
}
const exportedTypes = sources.types.statements
  .filter((st) => ts.isInterfaceDeclaration(st) && st.modifiers?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword))
  .map((st) => st.name.text);

const snake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const isPrivate = (node) => node.modifiers?.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword);

/** Name -> type node of an interface's (and its bases') or a type literal's properties. */
function members(node) {
  const out = new Map();
  for (const h of node.heritageClauses ?? []) {
    if (h.token !== ts.SyntaxKind.ExtendsKeyword) continue;
    for (const t of h.types) for (const [k, v] of members(interfaces.get(t.expression.getText()))) out.set(k, v);
  }
  for (const m of node.members) {
    if (ts.isPropertySignature(m) || (ts.isPropertyDeclaration(m) && !isPrivate(m))) out.set(m.name.getText(), m.type);
  }
  return out;
}

/** The interfaces or type literals a type names (through arrays, unions, Promise). */
function shapes(node) {
  if (!node) return [];
  if (ts.isParenthesizedTypeNode(node)) return shapes(node.type);
  if (ts.isArrayTypeNode(node)) return shapes(node.elementType);
  if (ts.isUnionTypeNode(node)) return node.types.flatMap(shapes);
  if (ts.isTypeLiteralNode(node)) return [node];
  if (ts.isTypeReferenceNode(node)) {
    const name = node.typeName.getText();
    if (name === "Promise") return shapes(node.typeArguments[0]);
    return interfaces.has(name) ? [interfaces.get(name)] : [];
  }
  return [];
}

function classNamed(src, name) {
  return src.statements.find((st) => ts.isClassDeclaration(st) && st.name?.text === name);
}

const methods = new Map(
  classNamed(sources.client, "Mags")
    .members.filter((m) => ts.isMethodDeclaration(m) && !isPrivate(m))
    .map((m) => [m.name.getText(), m]),
);

/** [name, type node, options object?] of the values a method's parameters
 * send: an options parameter stands for its members. */
function sentParams(name) {
  const params = [...methods.get(name).parameters];
  if (OPERATIONS[name][1].includes("{")) params.shift(); // the id, name or subdomain in the path
  return params.map((p) => {
    const [shape] = shapes(p.type);
    return shape ? { name: p.name.getText(), options: [...members(shape)] } : { name: p.name.getText(), type: p.type };
  });
}

function paramFields(name) {
  const allow = ALLOW[name] ?? {};
  const out = new Set();
  for (const p of sentParams(name)) {
    for (const [n] of p.options ?? [[p.name]]) {
      const s = snake(n);
      if (!(allow.client_only ?? []).includes(s)) out.add(allow.renamed?.[s] ?? s);
    }
  }
  return out;
}

function diff(what, sdk, api, allow = {}) {
  const renamed = allow.renamed ?? {};
  sdk = new Set([...sdk].map((f) => renamed[f] ?? f));
  const missing = [...api].filter((f) => !sdk.has(f) && !(allow.api_only ?? []).includes(f));
  const extra = [...sdk].filter((f) => !api.has(f) && !(allow.sdk_only ?? []).includes(f));
  const out = [];
  if (missing.length) out.push(`${what}: the API has ${JSON.stringify(missing.sort())}, the SDK does not`);
  if (extra.length) out.push(`${what}: the SDK has ${JSON.stringify(extra.sort())}, the API does not`);
  return out;
}

function compareShape(shape, label, schema, seen) {
  if (seen.has(label)) return [];
  seen.add(label);
  const m = members(shape);
  const problems = diff(label, new Set(m.keys()), fields(schema), ALLOW[label]);
  const props = properties(schema);
  for (const [name, typeNode] of m) {
    if (!props[name]) continue;
    for (const sub of shapes(typeNode)) {
      const inner = objectOf(props[name]);
      if (!inner) problems.push(`${label}.${name} is an object, the API's is not`);
      else problems.push(...compareShape(sub, sub.name?.text ?? `${label}.${name}`, inner, seen));
    }
  }
  return problems;
}

// ── the checks ───────────────────────────────────────────────────────

test("every operation exists and is a method of Mags", () => {
  for (const [name, op] of Object.entries(OPERATIONS)) {
    operation(op);
    assert.ok(methods.has(name), `Mags.${name}`);
  }
});

test("every request field is an option and every option a field", () => {
  const problems = [];
  for (const [name, op] of Object.entries(OPERATIONS)) {
    const schema = bodySchema(op);
    if (!schema) continue;
    const allow = ALLOW[name] ?? {};
    const api = new Set([...fields(schema)].filter((f) => !(allow.fixed ?? []).includes(f)));
    problems.push(...diff(`Mags.${name}()`, paramFields(name), api, { api_only: allow.not_offered }));
  }
  assert.deepEqual(problems, []);
});

test("every result type matches its answer, and every type is checked", () => {
  const problems = [];
  const seen = new Set();
  for (const [name, op] of Object.entries(OPERATIONS)) {
    for (const shape of shapes(methods.get(name).type)) {
      const label = shape.name?.text ?? `Mags.${name}() answer`;
      if (!CLIENT_SHAPES.has(label)) problems.push(...compareShape(shape, label, answerSchema(op), seen));
    }
  }
  assert.deepEqual(problems, []);
  const events = new Set(STREAM_EVENTS.map(([n]) => n));
  const unchecked = exportedTypes.filter((n) => !seen.has(n) && !CLIENT_SHAPES.has(n) && !events.has(n));
  assert.deepEqual(unchecked, [], "interfaces of types.ts checked against no schema (map them in OPERATIONS)");
});

test("every stream event matches its variant", () => {
  const problems = [];
  const covered = new Set();
  for (const [name, op, event, allow] of STREAM_EVENTS) {
    const variants = resolve(answerSchema(op, "application/x-ndjson")).oneOf ?? [];
    const match = variants.filter((v) => (resolve(v).properties.event.enum ?? []).includes(event));
    assert.equal(match.length, 1, `${op[1]}: variants of event ${event}`);
    covered.add(`${op[1]} ${event}`);
    const shape = name.startsWith("class ")
      ? classNamed(sources.streams, name.slice(6))
      : interfaces.get(name);
    const sdk = new Set([...members(shape).keys()].map(snake));
    problems.push(...diff(`${name} (${event} of ${op[1]})`, sdk, fields(match[0]), allow));
  }
  assert.deepEqual(problems, []);
  for (const op of [OUTPUT, EXEC_STREAM]) {
    for (const v of resolve(answerSchema(op, "application/x-ndjson")).oneOf) {
      for (const event of resolve(v).properties.event.enum) {
        const key = `${op[1]} ${event}`;
        assert.ok(covered.has(key) || RAISED_EVENTS.has(key), `${op[1]}: no SDK type for event ${event}`);
      }
    }
  }
});

// ── what the client sends ────────────────────────────────────────────

/** A value of a type node that the client sends. */
function sample(node) {
  switch (node?.kind) {
    case ts.SyntaxKind.StringKeyword:
      return "x";
    case ts.SyntaxKind.NumberKeyword:
      return 7;
    case ts.SyntaxKind.BooleanKeyword:
      return true;
    case ts.SyntaxKind.ArrayType:
      return [sample(node.elementType)];
    case ts.SyntaxKind.UnionType: {
      const absent = [ts.SyntaxKind.UndefinedKeyword, ts.SyntaxKind.NullKeyword];
      return sample(node.types.find((t) => !absent.includes(t.kind)));
    }
  }
  if (node && ts.isTypeReferenceNode(node) && node.typeName.getText() === "Record") return { K: "v" };
  assert.fail(`no sample value for a parameter of type ${node?.getText()}`);
}

/** Every option given (but the client-only ones); the path's id is `sb`. */
function args(name) {
  const allow = ALLOW[name] ?? {};
  const out = OPERATIONS[name][1].includes("{") ? ["sb"] : [];
  for (const p of sentParams(name)) {
    if (!p.options) {
      out.push(sample(p.type));
      continue;
    }
    const o = {};
    for (const [n, t] of p.options) if (!(allow.client_only ?? []).includes(snake(n))) o[n] = sample(t);
    out.push(o);
  }
  return out;
}

test("every option reaches the body under the API's name", async () => {
  const seen = [];
  const server = http.createServer((req, res) => {
    let data = "";
    req.on("data", (c) => (data += c));
    req.on("end", () => {
      seen.push([req.method.toLowerCase(), req.url.split("?")[0], data ? JSON.parse(data) : null]);
      let reply = {};
      if (req.method === "GET" && req.url.startsWith("/api/v1/mags-jobs?")) {
        reply = { jobs: [{ request_id: "11111111-2222-3333-4444-555555555555", name: "sb", status: "running" }] };
      }
      const type = req.url.endsWith("/exec/stream") ? "application/x-ndjson" : "application/json";
      res.writeHead(200, { "Content-Type": type });
      res.end(type === "application/json" ? JSON.stringify(reply) : '{"event":"exit","exit_code":0}\n');
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const m = new Mags({ apiUrl: `http://127.0.0.1:${server.address().port}`, apiToken: "t" });
    const problems = [];
    const withBody = Object.entries(OPERATIONS).filter(([, op]) => bodySchema(op));
    assert.ok(withBody.some(([n]) => n === "run") && withBody.some(([n]) => n === "cronCreate"));
    for (const [name, op] of withBody) {
      seen.length = 0;
      const result = await m[name](...args(name));
      if (name === "execStream") await result.wait();
      const sent = seen.filter(([method, path]) => method === op[0] && path.startsWith(op[1].split("{")[0]));
      assert.ok(sent.length, `Mags.${name} sent no ${op[0].toUpperCase()} ${op[1]}`);
      const allow = ALLOW[name] ?? {};
      const body = new Set(Object.keys(sent.at(-1)[2] ?? {}));
      problems.push(...diff(`Mags.${name}() body`, body, fields(bodySchema(op)), { api_only: allow.not_offered }));
    }
    assert.deepEqual(problems, []);
  } finally {
    server.close();
  }
});
