-- Webhooks (Standard Webhooks: signed, at-least-once, from an outbox), job deletion and
-- retention.

-- A tenant's registered endpoints. The secret signs every delivery; after a rotation the
-- previous one signs too (a second signature) until `previous_until`.
CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url             text NOT NULL,
    -- Event types delivered; empty means all.
    events          text[] NOT NULL DEFAULT '{}',
    include_result  boolean NOT NULL DEFAULT false,
    description     text,
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    last_success_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at);

-- The secret that signs deliveries to the per-job `webhook_url` of a tenant's jobs.
CREATE TABLE webhook_tenant_secrets (
    tenant_id       uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per event and target, written in the transaction that stores what
-- the event announces. `body` is the exact payload, the same bytes on every attempt.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- NULL: the job's own `webhook_url`, signed with the tenant's secret.
    endpoint_id     uuid REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    job_id          uuid REFERENCES jobs (id) ON DELETE CASCADE,
    batch_id        uuid REFERENCES batches (id) ON DELETE CASCADE,
    event           text NOT NULL,
    url             text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts so far; the retry schedule counts from `schedule_base` (a redelivery
    -- starts the schedule again).
    attempts        integer NOT NULL DEFAULT 0,
    schedule_base   integer NOT NULL DEFAULT 0,
    -- When the next attempt is due. A dispatcher that takes the row moves it past its
    -- attempt's deadline, so a dispatcher killed mid-attempt lets it come due again.
    next_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n           integer NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,
    error       text,
    duration_ms integer NOT NULL,
    PRIMARY KEY (delivery_id, n)
);

-- Deletion and retention: the transcript cache entries a job's runs wrote (deleted with
-- the job), and when its uploaded audio was purged.
ALTER TABLE jobs
    ADD COLUMN cache_keys       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN audio_deleted_at timestamptz;
-- Jobs the audio purge has not passed yet, oldest first (it marks every finished job it
-- passes, uploads or not, so the index holds only recent ones).
CREATE INDEX jobs_audio_to_purge ON jobs (finished_at) WHERE audio_deleted_at IS NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Per-tenant overrides of `audio_retention_s` and `result_retention_s` (NULL: the
-- service's setting; 0: keep forever).
ALTER TABLE tenants
    ADD COLUMN audio_retention_s  bigint,
    ADD COLUMN result_retention_s bigint;
