-- Per-job egress lists (JSON arrays of CIDRs or hostnames): `egress_allow`
-- limits the job to those destinations, `egress_deny` adds denials. Both
-- only narrow the server's policy. Portable SQL (SQLite and Postgres).
ALTER TABLE jobs ADD COLUMN egress_allow TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN egress_deny TEXT NOT NULL DEFAULT '[]';
