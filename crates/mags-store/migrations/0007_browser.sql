-- Browser sessions and per-job egress.
--
-- Browser sessions: a job_access row with a secret is a CDP endpoint; the
-- URL proxy serves it only to requests that carry the secret (first path
-- segment) or the owner's token. Portable SQL (SQLite and Postgres).
ALTER TABLE job_access ADD COLUMN secret TEXT;

-- Per-job egress: a job with no_internet reaches nothing outside its VM.
ALTER TABLE jobs ADD COLUMN no_internet BIGINT NOT NULL DEFAULT 0;
