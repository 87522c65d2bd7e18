-- Scheduled jobs. Portable SQL (SQLite and Postgres).
--
-- next_run_at: when the next run is due (NULL while disabled). A host
-- starts a run only after moving next_run_at forward with an UPDATE that
-- names the value it read, so of several hosts (or a restarted server)
-- exactly one starts each run, and ticks missed while no server ran
-- collapse into one run.
-- last_job_id: the job of the latest run; last_skip: why the latest due
-- run was not started (previous run still live, workspace busy), if so.

CREATE TABLE cron_jobs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    expression TEXT NOT NULL,
    script TEXT NOT NULL,
    persistent BIGINT NOT NULL DEFAULT 0,
    workspace_id TEXT,
    environment TEXT NOT NULL DEFAULT '{}',
    enabled BIGINT NOT NULL DEFAULT 1,
    next_run_at BIGINT,
    last_run_at BIGINT,
    last_job_id TEXT,
    last_skip TEXT,
    run_count BIGINT NOT NULL DEFAULT 0,
    skip_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE UNIQUE INDEX cron_jobs_user_name ON cron_jobs (user_id, name);
CREATE INDEX cron_jobs_due ON cron_jobs (next_run_at);
