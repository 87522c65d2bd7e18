-- Workspace versions in the database. Portable SQL (SQLite and Postgres).
--
-- Several hosts share one database and one object store, so which stored
-- version of a workspace is current is decided here, by one compare-and-
-- set on workspaces.version (from the parent version a disk was made
-- from), never by replacing an object in the store.
-- workspaces.version: the current version; 0 for none yet; NULL: not
-- recorded yet (a workspace an older release stored: its `latest` ref is
-- read once and recorded).
-- workspace_versions: the kept versions of each workspace and their
-- manifests' object keys; garbage collection keeps exactly what these
-- rows reference.

ALTER TABLE workspaces ADD COLUMN version BIGINT;

CREATE TABLE workspace_versions (
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, name, version),
    FOREIGN KEY (user_id, name) REFERENCES workspaces (user_id, name) ON DELETE CASCADE
);
