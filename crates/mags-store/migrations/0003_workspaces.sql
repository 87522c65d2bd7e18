-- Workspaces and uploaded files. Portable SQL (SQLite and Postgres).
--
-- workspaces: one row per (user, name). live_job_id is the job holding the
-- workspace; a claim succeeds only while it is NULL or names a job that is
-- final, so "one live job per workspace" is a single atomic UPDATE.
-- persistent: ever synced to object storage (its versions live there).
-- cached_at: when its disk was last left on this host's cache (NULL: none).

CREATE TABLE workspaces (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    persistent BIGINT NOT NULL DEFAULT 0,
    disk_bytes BIGINT NOT NULL DEFAULT 0,
    live_job_id TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX uploads_user ON uploads (user_id);
