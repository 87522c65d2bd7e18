-- SSH access keys of live sandboxes (POST /mags-jobs/{id}/access, port 22).
-- The private key goes to the caller once and is never kept; the public
-- key is kept only as its SHA-256 fingerprint, which is all the gateway
-- needs to find the sandbox a verified key opens. Rows of ended jobs are
-- refused at login and removed on the next access request.

CREATE TABLE ssh_keys (
    fingerprint TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ssh_keys_job ON ssh_keys (job_id);
