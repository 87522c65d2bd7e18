import { test } from "node:test";
import assert from "node:assert/strict";
import { Mags, MagsError } from "../dist/esm/index.js";
import { client } from "./helpers.mjs";

test("own tokens: create, list, revoke; the audit log has both", async () => {
  const m = client();
  const made = await m.createToken();
  assert.ok(made.token.startsWith(made.prefix));
  const list = await m.listTokens();
  assert.equal(list.total, list.tokens.length);
  assert.equal(list.tokens.find((t) => t.id === made.id)?.revoked, false);
  assert.ok(!JSON.stringify(list).includes(made.token));

  const other = new Mags({ apiToken: made.token });
  assert.equal((await other.listTokens()).total, list.total);
  assert.equal((await m.revokeToken(made.prefix)).id, made.id);
  await assert.rejects(other.listTokens(), (e) => e instanceof MagsError && e.statusCode === 401);
  await assert.rejects(m.revokeToken("no-such-token"), (e) => e.statusCode === 404);

  const events = (await m.audit({ since: "1h" })).events.map((e) => `${e.action} ${e.target_id}`);
  assert.ok(events.includes(`token.create ${made.id}`), events.join("\n"));
  assert.ok(events.includes(`token.revoke ${made.id}`), events.join("\n"));
});
