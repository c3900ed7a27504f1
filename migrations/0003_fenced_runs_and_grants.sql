-- Fenced runs: every claim of a job draws a new token, and only the run holding it may
-- touch, complete, fail or requeue the job. A stale run (a worker paused past its
-- heartbeats, then resumed) finds the token changed and writes nothing.
ALTER TABLE jobs ADD COLUMN run_token uuid;

-- The sweeper's lost-run query reads processing jobs by last touch; without this index
-- it scanned the whole table every sweep.
CREATE INDEX jobs_processing_touched ON jobs (updated_at) WHERE status = 'processing';

-- S3 prefixes a tenant may submit audio from, besides its own uploads
-- (`voxq-api sources grant --tenant T s3://bucket/prefix/`). `prefix` is canonical and
-- ends with '/', or is empty for the whole bucket.
CREATE TABLE source_grants (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    bucket     text NOT NULL,
    prefix     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, bucket, prefix)
);

-- Leases: one holder at a time for fleet-wide duties (the sweeper). A holder renews its
-- lease before it expires; another process takes it over once it has.
CREATE TABLE leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);
