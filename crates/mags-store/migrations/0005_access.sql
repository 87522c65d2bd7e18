-- Public URLs. Portable SQL (SQLite and Postgres).
--
-- job_access: a subdomain of the apps domain that reaches `port` in the
-- sandbox of `job_id` (one per job and port).
-- url_aliases: a subdomain chosen by the user that reaches whichever job is
-- live in workspace (user_id, workspace_id); subdomains of both tables
-- share one namespace (checked by the server).

CREATE TABLE job_access (
    subdomain TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    port BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (job_id, port)
);

CREATE TABLE url_aliases (
    id TEXT PRIMARY KEY,
    subdomain TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL,
    domain TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX url_aliases_user ON url_aliases (user_id);
