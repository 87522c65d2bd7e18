-- Portable SQL: runs unchanged on SQLite and Postgres.
-- Ids are generated in Rust (UUID text), flags are BIGINT 0/1, timestamps are
-- BIGINT unix milliseconds. {{BLOB}} is the one dialect word (BLOB / BYTEA).

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT,
    workspace_id TEXT,
    base_workspace_id TEXT,
    persistent BIGINT NOT NULL DEFAULT 0,
    no_sleep BIGINT NOT NULL DEFAULT 0,
    no_sync BIGINT NOT NULL DEFAULT 0,
    startup_command TEXT,
    script TEXT NOT NULL,
    environment TEXT NOT NULL DEFAULT '{}',
    file_ids TEXT NOT NULL DEFAULT '[]',
    disk_gb BIGINT NOT NULL,
    rootfs_type TEXT,
    status TEXT NOT NULL,
    vm_id TEXT,
    exit_code BIGINT,
    error TEXT,
    script_duration_ms BIGINT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);

CREATE INDEX jobs_user_created ON jobs (user_id, created_at);
CREATE INDEX jobs_status ON jobs (status);
CREATE INDEX jobs_user_workspace ON jobs (user_id, workspace_id);

CREATE TABLE job_output (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    stream TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
