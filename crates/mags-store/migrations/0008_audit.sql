-- The audit log: security-relevant events (failed authentication, tokens
-- and users made or removed, URL and SSH access, SSH and browser
-- sessions, deletes, stops). Portable SQL (SQLite and Postgres).
--
-- No foreign keys: an event outlives the user, token or job it names (the
-- removal of a user is itself an event). user_name keeps the log readable
-- after the user is gone. token_prefix is the displayed prefix of a token,
-- never the token. Rows older than the server's retention are pruned.

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    user_id TEXT,
    user_name TEXT,
    token_id TEXT,
    token_prefix TEXT,
    action TEXT NOT NULL,
    target_kind TEXT,
    target_id TEXT,
    detail TEXT,
    source_ip TEXT
);

CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_user_at ON audit_events (user_id, at);
