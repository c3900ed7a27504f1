//! The service's fetch stage: a job's `audio_url` (S3 or HTTPS), read only if the
//! job's tenant may read it. The API checked the source at submission; a grant may have
//! been revoked since, so it is checked again before every fetch.

use std::sync::Arc;

use futures::future::BoxFuture;
use shared::config::Config;
use shared::domain::AudioSource;
use sqlx::PgPool;
use tracing::Instrument;

use crate::pipeline::{Fetched, Job, Source, StageError};
use crate::stage::fetch::FetchStage;

/// What a client reads when its job names an S3 object it may not read.
const FORBIDDEN_SOURCE: &str =
    "this tenant may read only its own uploads and the S3 prefixes granted to it";

pub struct Remote {
    pub fetch: FetchStage,
    pub db: PgPool,
    pub config: Arc<Config>,
}

impl Source for Remote {
    fn fetch<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Result<Fetched, StageError>> {
        Box::pin(async move {
            let source = AudioSource::parse(job.source, self.config.fetch_allow_http)
                .map_err(|m| StageError::input("invalid-source", m))?;
            if let AudioSource::S3 { bucket, key } = &source {
                let allowed = match job.tenant {
                    Some(tenant) => shared::db::may_read_source(
                        &self.db,
                        tenant,
                        &self.config.s3_bucket,
                        bucket,
                        key,
                    )
                    .await
                    .map_err(|e| StageError::upstream("internal-error", e.to_string(), true))?,
                    None => false,
                };
                if !allowed {
                    return Err(StageError::input(
                        "forbidden-source",
                        FORBIDDEN_SOURCE.to_string(),
                    ));
                }
            }
            let bytes = self
                .fetch
                .run(&source)
                .instrument(tracing::info_span!("download"))
                .await
                .map_err(|e| {
                    StageError::upstream(e.code(), e.detail(), e.worth_retrying(job.attempt))
                })?;
            Ok(Fetched::Bytes {
                bytes: bytes.into(),
                ext: source.extension(),
            })
        })
    }
}
