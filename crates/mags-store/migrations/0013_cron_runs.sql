-- One row per due run of a cron job, started or skipped. Portable SQL
-- (SQLite and Postgres).
--
-- The primary key (cron_id, due_at) makes a due time start at most once:
-- the host that moves cron_jobs.next_run_at off due_at also inserts this
-- row, the run's job and the cron's run record in the same transaction,
-- so a host that dies half-way leaves the run due for another host, and a
-- repeat for the same due time (a retry, a schedule set back to a time
-- that already ran) inserts nothing.
-- job_id: the run's job (no foreign key: retention deletes ended jobs);
-- NULL with skip_reason when the run was skipped.
-- host: the name of the host that decided the run, if it has one.
-- created_at: the database's clock when it was decided.

CREATE TABLE cron_runs (
    cron_id TEXT NOT NULL REFERENCES cron_jobs (id) ON DELETE CASCADE,
    due_at BIGINT NOT NULL,
    job_id TEXT,
    skip_reason TEXT,
    host TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cron_id, due_at)
);
