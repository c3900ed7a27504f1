//! S3 object storage (AWS S3, MinIO or any S3-compatible server) through aws-sdk-s3.
//!
//! The same code path serves production and tests: only the endpoint URL and path-style
//! addressing differ. Credentials come from the standard AWS provider chain
//! (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, profiles, instance roles).

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    #[error("access to s3://{bucket}/{key} is denied")]
    Forbidden { bucket: String, key: String },
    #[error("object is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// Network errors, timeouts, throttling and 5xx answers: worth retrying.
    #[error("S3 is unavailable: {detail}")]
    Unavailable { detail: String },
    #[error("S3 request failed: {detail}")]
    Other { detail: String },
}

impl ObjectError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A bucket-aware S3 client.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: Client,
    bucket: String,
}

impl ObjectStore {
    pub async fn connect(config: &Config) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(config.fetch_timeout_s.max(1)))
            .build();
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.s3_region.clone()))
            .timeout_config(timeouts)
            .load()
            .await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.s3_force_path_style);
        if !config.s3_endpoint.is_empty() {
            builder = builder.endpoint_url(&config.s3_endpoint);
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: config.s3_bucket.clone(),
        }
    }

    /// The uploads bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the uploads bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e, &self.bucket, "")),
        }
    }

    /// Readiness: the uploads bucket answers.
    pub async fn ping(&self) -> Result<(), ObjectError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket, ""))?;
        Ok(())
    }

    pub async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket, key))?;
        Ok(())
    }

    /// Stores a file from disk, streaming it: an upload never sits whole in memory.
    pub async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| ObjectError::Other {
                detail: format!("reading {}: {e}", path.display()),
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket, key))?;
        Ok(())
    }

    /// Keys of the uploads bucket under `prefix`, at most `limit`, in key order.
    pub async fn list_keys(&self, prefix: &str, limit: i32) -> Result<Vec<String>, ObjectError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(limit)
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket, prefix))?;
        Ok(out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect())
    }

    /// One page of the keys of any bucket under `prefix`, in key order, after
    /// `start_after`; `true` while more follow. For server-side batch listings.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: i32,
    ) -> Result<(Vec<String>, bool), ObjectError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .max_keys(max)
            .send()
            .await
            .map_err(|e| classify(e, bucket, prefix))?;
        let keys = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        Ok((keys, out.is_truncated().unwrap_or(false)))
    }

    /// Deletes an object of the uploads bucket (deleting a missing one is no error).
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, &self.bucket, key))?;
        Ok(())
    }

    /// Reads a whole object of any bucket these credentials can read, refusing objects
    /// larger than `limit` bytes before downloading them.
    pub async fn get(&self, bucket: &str, key: &str, limit: u64) -> Result<Vec<u8>, ObjectError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(e, bucket, key))?;
        if out.content_length().is_some_and(|n| n as u64 > limit) {
            return Err(ObjectError::TooLarge { limit });
        }
        let mut body = out.body;
        let mut data = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| ObjectError::Unavailable {
                detail: format!("reading s3://{bucket}/{key}: {e}"),
            })?
        {
            if (data.len() + chunk.len()) as u64 > limit {
                return Err(ObjectError::TooLarge { limit });
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }
}

fn classify<E>(e: SdkError<E, HttpResponse>, bucket: &str, key: &str) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (bucket, key) = (bucket.to_string(), key.to_string());
    let status = e.raw_response().map(|r| r.status().as_u16());
    let detail = DisplayErrorContext(&e).to_string();
    match (e.code(), status) {
        (Some("NoSuchKey" | "NoSuchBucket" | "NotFound"), _) | (_, Some(404)) => {
            ObjectError::NotFound { bucket, key }
        }
        (Some("AccessDenied" | "Forbidden"), _) | (_, Some(401 | 403)) => {
            ObjectError::Forbidden { bucket, key }
        }
        (Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout"), _)
        | (_, Some(408 | 429 | 500..=599)) => ObjectError::Unavailable { detail },
        _ if matches!(
            e,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
        ) =>
        {
            ObjectError::Unavailable { detail }
        }
        _ => ObjectError::Other { detail },
    }
}
