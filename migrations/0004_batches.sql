-- Batches, fair bulk dispatch, idempotency keys, tenant limits and reprocessing.

-- A job of a paused batch waits as `paused` (not dispatched); a cancelled one never runs.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'paused', 'cancelled'));

-- A batch: items submitted together (kind `batch`) or jobs an admin reprocesses
-- (kind `reprocess`). Its progress is read from its items' jobs.
CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('batch', 'reprocess')),
    status          text NOT NULL
                    CHECK (status IN ('listing', 'running', 'paused', 'completed', 'cancelled')),
    lane            text NOT NULL CHECK (lane IN ('interactive', 'bulk')),
    -- Batch-level options (every item's options start from these).
    options         jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- s3://bucket/prefix/ of a batch listed server-side, and where the listing got to
    -- (the last key listed): a listing that stops resumes after it.
    source          text,
    listing_after   text,
    total           integer NOT NULL DEFAULT 0,
    idempotency_key text,
    request_hash    bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at DESC, id DESC);
CREATE INDEX batches_open ON batches (status) WHERE status IN ('listing', 'running', 'paused');

-- The jobs of a batch, in submission order; `version` is the result version the batch
-- asked for (1 for new jobs, the next version for a reprocess).
CREATE TABLE batch_items (
    batch_id  uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    seq       integer NOT NULL,
    job_id    uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version   integer NOT NULL,
    custom_id text,
    PRIMARY KEY (batch_id, seq),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX batch_items_job ON batch_items (job_id);

ALTER TABLE jobs
    -- The batch that created the job, and the caller's id for it within that batch.
    ADD COLUMN batch_id        uuid REFERENCES batches (id) ON DELETE SET NULL,
    ADD COLUMN custom_id       text,
    -- `Idempotency-Key` of the request that created the job, and the SHA-256 of its body.
    ADD COLUMN idempotency_key text,
    ADD COLUMN request_hash    bytea,
    -- Runs counted before the current version was requested: a reprocessed job gets
    -- `max_attempts` runs again, while task ids (`<job>:<attempts>`) stay unique.
    ADD COLUMN attempts_base   integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing: keyset pagination over (created_at, id), newest first.
DROP INDEX jobs_tenant_created;
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC, id DESC);

-- Enqueueing: interactive jobs are pushed at once (and by the sweeper if that failed);
-- bulk jobs wait in PostgreSQL until the fair dispatcher hands them to Redis. Both
-- read by lane, so a backlog of one lane never slows the other's queries.
DROP INDEX jobs_to_enqueue;
CREATE INDEX jobs_to_enqueue ON jobs (lane, enqueued_at NULLS FIRST) WHERE status = 'queued';
-- The bulk backlog of each tenant, oldest first: the dispatcher reads a few rows of each.
CREATE INDEX jobs_bulk_backlog ON jobs (tenant_id, created_at, id)
    WHERE status = 'queued' AND lane = 'bulk' AND enqueued_at IS NULL;
CREATE INDEX jobs_tenant_processing ON jobs (tenant_id) WHERE status = 'processing';

-- Limits an admin sets per tenant (NULL: no limit).
ALTER TABLE tenants
    ADD COLUMN max_concurrent   integer,
    ADD COLUMN max_jobs_per_day integer,
    ADD COLUMN allow_strong     boolean NOT NULL DEFAULT true,
    ADD COLUMN allow_rubrics    boolean NOT NULL DEFAULT true;
