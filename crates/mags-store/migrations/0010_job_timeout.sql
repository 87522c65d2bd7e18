-- Job timeouts. Portable SQL (SQLite and Postgres).
--
-- timeout_secs: the script of the job is killed after this many seconds
-- (the request's `timeout`, else the server's default when the job was
-- accepted); NULL = no limit.
ALTER TABLE jobs ADD COLUMN timeout_secs BIGINT;
