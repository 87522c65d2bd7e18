-- Hosts of a cluster, their leases, and who owns each job. Portable SQL
-- (SQLite and Postgres).
--
-- hosts: one row per host name. `epoch` grows by one at every start of
-- that host; `lease_until` (the database's clock, unix ms) is renewed every
-- couple of seconds. state: 'up', 'draining' (takes no new work) or 'lost'
-- (declared dead by the leader; its work was handed on).
CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    internal_url TEXT,
    capacity BIGINT NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}',
    epoch BIGINT NOT NULL,
    state TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    renewed_at BIGINT NOT NULL,
    lost_reason TEXT
);

-- The one leader (id = 1): the host that runs the cluster's singletons
-- (declaring hosts lost, garbage collection, pruning) while its lease holds.
CREATE TABLE cluster_leader (
    id BIGINT PRIMARY KEY,
    host TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    since BIGINT NOT NULL
);

-- The host (and its epoch) that runs a job; NULL: nobody yet (waiting to
-- be claimed) or nobody any more (its host was lost). Every state change a
-- host writes about a job is guarded by both.
ALTER TABLE jobs ADD COLUMN host TEXT;
ALTER TABLE jobs ADD COLUMN host_epoch BIGINT;
CREATE INDEX jobs_by_host ON jobs (host, status);
