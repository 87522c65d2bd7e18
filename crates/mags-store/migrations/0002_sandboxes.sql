-- Long-lived sandboxes: a per-job idle timeout, and VM time kept as a sum of
-- the periods a VM really ran (a sleeping sandbox costs no VM time).
-- vm_ms: finished periods; vm_since: start of the current one, NULL while
-- no VM runs. Portable SQL (SQLite and Postgres), one column per ALTER.

ALTER TABLE jobs ADD COLUMN idle_timeout_secs BIGINT;
ALTER TABLE jobs ADD COLUMN vm_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN vm_since BIGINT;

UPDATE jobs SET vm_ms = finished_at - started_at
    WHERE started_at IS NOT NULL AND finished_at IS NOT NULL;
UPDATE jobs SET vm_since = started_at
    WHERE started_at IS NOT NULL AND finished_at IS NULL;
