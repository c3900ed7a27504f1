-- voxq service schema: tenants, API keys, jobs and versioned results.

CREATE TABLE tenants (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a key is stored; `prefix` (the first characters) helps people
-- tell their keys apart without revealing them.
CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix     text NOT NULL,
    key_hash   bytea NOT NULL UNIQUE,
    scopes     text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    lane              text NOT NULL CHECK (lane IN ('interactive', 'bulk')),
    -- s3://bucket/key or https://host/path
    source            text NOT NULL,
    options           jsonb NOT NULL DEFAULT '{}'::jsonb,
    attempts          integer NOT NULL DEFAULT 0,
    -- The result version the next successful run writes; a reprocess increments it.
    requested_version integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Set once the job is in Redis; NULL means the enqueue sweeper still has to push it.
    enqueued_at       timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    worker            text,
    -- Milliseconds per stage of the run that completed the job: {"fetch": .., "decode": ..}
    timings           jsonb,
    error_code        text,
    error_message     text
);

CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC);
CREATE INDEX jobs_to_enqueue ON jobs (enqueued_at NULLS FIRST) WHERE status = 'queued';

CREATE TABLE job_results (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version    integer NOT NULL,
    transcript jsonb NOT NULL,
    model      text NOT NULL,
    worker     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, version)
);
