-- Stored job output: counted, deletable, bounded. Portable SQL (SQLite
-- and Postgres).
--
-- output_bytes: bytes of the job's rows in job_output (kept up to date by
-- every append, in the same transaction); counted in its user's disk
-- quota. output_pruned_at: unix ms when the server's retention deleted the
-- output of this ended job to bound the total (the job row stays); NULL:
-- never pruned.
ALTER TABLE jobs ADD COLUMN output_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN output_pruned_at BIGINT;
UPDATE jobs SET output_bytes = COALESCE(
    (SELECT SUM(LENGTH(o.data)) FROM job_output o WHERE o.job_id = jobs.id), 0);
CREATE INDEX jobs_finished ON jobs (finished_at);
