//! Every public function of `shared::db`, and so every SQL statement the binaries run,
//! against a real PostgreSQL with the migrations applied. The queries are plain strings
//! (no compile-time checking), so these tests are what catches a query that no longer
//! matches the schema, or a row read into the wrong type.
//!
//! Run with the services of `scripts/services.sh` (`eval "$(scripts/services.sh up)"`):
//! each test creates its own database next to `VOXQ_DATABASE_URL`, so the fleet-wide
//! queries (`jobs_to_enqueue`, `recover_lost_runs`, `list_sources`) see only its rows.
//! A passing test drops its database; a failing one keeps it for inspection.

use std::time::Duration;

use chrono::Utc;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;
use voxq_shared::config::Config;
use voxq_shared::db::{
    self, Claim, ClaimedJob, Fenced, GrantError, NewJob, QueuedJob, SourceGrant, RETRIES_EXHAUSTED,
    WORKER_CRASHED,
};
use voxq_shared::domain::{
    Flag, JobOptions, JobResult, JobStatus, Lane, ModelTier, S3Prefix, Scores, Segment, Stage,
    StageUsage, Summary, SummaryKind, SummaryMode, Task, Transcript, Usage,
};

const MINUTE: Duration = Duration::from_secs(60);

/// A database of its own for one test, with the migrations applied by `db::migrate`.
struct TestDb {
    pool: PgPool,
    name: String,
    /// The database of `scripts/services.sh`, from which this one is created and dropped.
    admin_url: String,
}

impl TestDb {
    async fn new() -> Self {
        let admin_url = std::env::var("VOXQ_DATABASE_URL").unwrap_or_else(|_| {
            panic!("VOXQ_DATABASE_URL is not set: run `eval \"$(scripts/services.sh up)\"` first")
        });
        let name = format!("voxq_dbtest_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .expect("connect to VOXQ_DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.expect("close");
        let mut url = url::Url::parse(&admin_url).expect("VOXQ_DATABASE_URL is a URL");
        url.set_path(&name);
        let config = Config {
            database_url: url.to_string(),
            database_max_connections: 4,
            ..Config::default()
        };
        let pool = db::connect(&config).await.expect("db::connect");
        db::migrate(&pool).await.expect("db::migrate");
        Self {
            pool,
            name,
            admin_url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} of the failed test", self.name);
            return;
        }
        // Drop cannot await: drop the database from a runtime of its own.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    let mut admin = PgConnection::connect(&url).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await
                })
        })
        .join()
        .expect("drop thread");
        if let Err(e) = dropped {
            eprintln!("could not drop database {}: {e}", self.name);
        }
    }
}

/// A tenant made the way `voxq-api keys create` makes one; its id.
async fn tenant(pool: &PgPool, name: &str) -> Uuid {
    db::create_api_key(pool, name, &["jobs:read".into()])
        .await
        .expect("create_api_key")
        .tenant_id
}

fn new_job(tenant_id: Uuid, lane: Lane) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        tenant_id,
        lane,
        source: format!("s3://calls/{}.ogg", Uuid::new_v4().simple()),
        options: JobOptions::default(),
        traceparent: None,
    }
}

/// Inserts a queued job; its id.
async fn queued(pool: &PgPool, tenant_id: Uuid, lane: Lane) -> Uuid {
    let job = new_job(tenant_id, lane);
    db::insert_job(pool, &job).await.expect("insert_job");
    job.id
}

/// Claims a job that must be claimable.
async fn claim(pool: &PgPool, id: Uuid, max_attempts: i32) -> ClaimedJob {
    match db::claim_job(pool, id, "worker-1", max_attempts, MINUTE)
        .await
        .expect("claim_job")
    {
        Claim::Run(job) => job,
        other => panic!("expected a run of {id}, got {other:?}"),
    }
}

/// Moves a job's timestamp `column` two minutes into the past: a run that stopped
/// touching its job, or a push that Redis may have lost.
async fn rewind(pool: &PgPool, id: Uuid, column: &str) {
    rewind_by(pool, id, column, 120).await;
}

async fn rewind_by(pool: &PgPool, id: Uuid, column: &str, secs: i32) {
    sqlx::query(&format!(
        "UPDATE jobs SET {column} = now() - make_interval(secs => $2) WHERE id = $1"
    ))
    .bind(id)
    .bind(f64::from(secs))
    .execute(pool)
    .await
    .expect("rewind");
}

async fn status(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> JobStatus {
    db::get_job(pool, tenant_id, id, None)
        .await
        .expect("get_job")
        .expect("the job exists")
        .status
}

/// Stored result versions of a job.
async fn result_versions(pool: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_results WHERE job_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count results")
}

fn full_result() -> JobResult {
    let usage = Usage::from([
        (
            Stage::Transcribe,
            StageUsage {
                wall_ms: 900.5,
                cpu_ms: 812.5,
                ..StageUsage::local("whisper-tiny.en")
            },
        ),
        (
            Stage::Summarize,
            StageUsage {
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
                tokens_in: 120,
                tokens_out: 30,
                cpu_ms: 2.25,
                cost_usd: 0.0005,
                cached: true,
                ..StageUsage::default()
            },
        ),
    ]);
    JobResult {
        transcript: Transcript {
            text: "Hello there. See you soon.".into(),
            language: "en".into(),
            language_probability: Some(0.97),
            duration_s: 3.5,
            segments: vec![Segment {
                start: 0.0,
                end: 3.5,
                text: "Hello there. See you soon.".into(),
                avg_logprob: -0.25,
                no_speech_prob: 0.125,
                words: None,
            }],
        },
        scores: Some(Scores {
            quality: 87,
            flags: vec![Flag::Noisy],
            duration_s: 3.5,
            loudness_dbfs: -21.5,
            loudness_lufs: -19.75,
            peak_dbfs: -1.5,
            clipping_ratio: 0.0,
            speech_ratio: 0.75,
            snr_db: 18.5,
            words_per_minute: 102.5,
            asr_confidence: 0.875,
            no_speech_prob: 0.125,
            compression_ratio: 1.25,
        }),
        summary: Some(Summary {
            kind: SummaryKind::Abstractive,
            text: "A greeting.".into(),
        }),
        rubric: Some(serde_json::json!({"politeness": 5})),
        usage,
    }
}

#[tokio::test]
async fn migrations_apply_once_and_ping_answers() {
    let t = TestDb::new().await;
    db::migrate(&t.pool)
        .await
        .expect("a second migrate is a no-op");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(applied, db::MIGRATOR.iter().count() as i64);
    db::ping(&t.pool).await.expect("ping");
    t.pool.close().await;
    assert!(
        db::ping(&t.pool).await.is_err(),
        "ping fails on a closed pool"
    );
}

#[tokio::test]
async fn api_keys_are_found_by_hash_until_revoked() {
    let t = TestDb::new().await;
    // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
    assert_eq!(
        hex::encode(db::hash_key("abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    let scopes = vec!["jobs:write".to_string(), "jobs:read".to_string()];
    let key = db::create_api_key(&t.pool, "acme", &scopes).await.unwrap();
    assert!(key.secret.starts_with("vxq_"), "{}", key.secret);
    assert_eq!(key.secret.len(), 4 + 64, "256 random bits in hex");
    let found = db::find_api_key_by_hash(&t.pool, &db::hash_key(&key.secret))
        .await
        .unwrap()
        .expect("the new key is found");
    assert_eq!(
        (found.id, found.tenant_id, &found.scopes),
        (key.id, key.tenant_id, &scopes)
    );
    assert!(found.has_scope("jobs:write") && found.has_scope("jobs:read"));
    assert!(!found.has_scope("jobs:admin"));

    let (prefix, stored_hash): (String, Vec<u8>) =
        sqlx::query_as("SELECT prefix, key_hash FROM api_keys WHERE id = $1")
            .bind(key.id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(prefix, key.secret[..12]);
    assert_eq!(
        stored_hash,
        db::hash_key(&key.secret),
        "only the hash is stored"
    );

    let second = db::create_api_key(&t.pool, "acme", &["jobs:read".into()])
        .await
        .unwrap();
    assert_eq!(second.tenant_id, key.tenant_id, "same tenant, reused");
    assert_ne!(second.id, key.id);
    assert_ne!(second.secret, key.secret);
    let found = db::find_api_key_by_hash(&t.pool, &db::hash_key(&second.secret))
        .await
        .unwrap()
        .expect("the second key is found");
    assert_eq!(found.id, second.id);
    assert!(found.has_scope("jobs:read") && !found.has_scope("jobs:write"));

    let other = db::create_api_key(&t.pool, "globex", &[]).await.unwrap();
    assert_ne!(other.tenant_id, key.tenant_id);
    let found = db::find_api_key_by_hash(&t.pool, &db::hash_key(&other.secret))
        .await
        .unwrap()
        .expect("a key without scopes is found");
    assert!(found.scopes.is_empty());

    assert!(
        db::find_api_key_by_hash(&t.pool, &db::hash_key("vxq_unknown"))
            .await
            .unwrap()
            .is_none()
    );
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(key.id)
        .execute(&t.pool)
        .await
        .unwrap();
    assert!(
        db::find_api_key_by_hash(&t.pool, &db::hash_key(&key.secret))
            .await
            .unwrap()
            .is_none(),
        "a revoked key is not found"
    );
}

#[tokio::test]
async fn source_grants_decide_what_a_tenant_may_read() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let globex = tenant(&t.pool, "globex").await;
    let team: S3Prefix = "s3://calls/team-a".parse().unwrap();
    let whole: S3Prefix = "s3://archive/".parse().unwrap();

    match db::grant_source(&t.pool, "ghost", &team).await {
        Err(GrantError::UnknownTenant(name)) => assert_eq!(name, "ghost"),
        other => panic!("granting to an unknown tenant: {other:?}"),
    }
    let before = Utc::now();
    db::grant_source(&t.pool, "acme", &team).await.unwrap();
    db::grant_source(&t.pool, "acme", &team)
        .await
        .expect("granting twice is a no-op");
    db::grant_source(&t.pool, "globex", &whole).await.unwrap();

    let all = db::list_sources(&t.pool, None).await.unwrap();
    let rows: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|g| (g.tenant.as_str(), g.bucket.as_str(), g.prefix.as_str()))
        .collect();
    assert_eq!(
        rows,
        [("acme", "calls", "team-a/"), ("globex", "archive", "")]
    );
    for g in &all {
        let age = g.created_at - before;
        assert!(
            age > -chrono::Duration::seconds(5) && age < chrono::Duration::seconds(60),
            "created_at {} is now",
            g.created_at
        );
    }
    let acme_only: Vec<SourceGrant> = db::list_sources(&t.pool, Some("acme")).await.unwrap();
    assert_eq!(acme_only, all[..1]);
    assert!(db::list_sources(&t.pool, Some("nobody"))
        .await
        .unwrap()
        .is_empty());

    let may = |tenant_id: Uuid, bucket: &'static str, key: String| {
        let pool = t.pool.clone();
        async move {
            db::may_read_source(&pool, tenant_id, "uploads", bucket, &key)
                .await
                .unwrap()
        }
    };
    assert!(may(acme, "calls", "team-a/x.ogg".into()).await);
    assert!(may(acme, "calls", "team-a/deep/x.ogg".into()).await);
    assert!(
        !may(acme, "calls", "team-a-private/x.ogg".into()).await,
        "a prefix covers its own folder only"
    );
    assert!(!may(acme, "calls", "team-b/x.ogg".into()).await);
    assert!(
        !may(acme, "archive", "x.ogg".into()).await,
        "globex's grant"
    );
    assert!(
        !may(globex, "calls", "team-a/x.ogg".into()).await,
        "acme's grant"
    );
    assert!(
        may(globex, "archive", "any/key.ogg".into()).await,
        "the whole bucket"
    );
    assert!(
        !may(acme, "calls", "team-a/../team-b/x.ogg".into()).await,
        "a key that is not canonical is never readable"
    );
    assert!(!may(globex, "archive", "a//b.ogg".into()).await);
    assert!(may(acme, "uploads", format!("uploads/{acme}/x.ogg")).await);
    assert!(
        !may(acme, "uploads", format!("uploads/{globex}/x.ogg")).await,
        "another tenant's upload"
    );
    assert!(!may(acme, "calls", format!("uploads/{acme}/x.ogg")).await);

    assert!(db::revoke_source(&t.pool, "acme", &team).await.unwrap());
    assert!(
        !db::revoke_source(&t.pool, "acme", &team).await.unwrap(),
        "nothing left to revoke"
    );
    assert!(
        !db::revoke_source(&t.pool, "globex", &team).await.unwrap(),
        "globex never had it"
    );
    match db::revoke_source(&t.pool, "ghost", &team).await {
        Err(GrantError::UnknownTenant(name)) => assert_eq!(name, "ghost"),
        other => panic!("revoking from an unknown tenant: {other:?}"),
    }
    assert!(!may(acme, "calls", "team-a/x.ogg".into()).await);
    let left = db::list_sources(&t.pool, None).await.unwrap();
    assert_eq!(left, all[1..]);
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires() {
    let t = TestDb::new().await;
    let lease = |name: &'static str, holder: &'static str| {
        let pool = t.pool.clone();
        async move { db::try_lease(&pool, name, holder, MINUTE).await.unwrap() }
    };
    assert!(lease("sweeper", "a").await, "a free lease is taken");
    assert!(!lease("sweeper", "b").await, "a held lease is refused");
    assert!(lease("sweeper", "a").await, "its holder renews it");
    assert!(lease("other", "b").await, "leases are independent");

    let expires: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT expires_at FROM leases WHERE name = 'sweeper'")
            .fetch_one(&t.pool)
            .await
            .unwrap();
    let ttl = expires - Utc::now();
    assert!(
        ttl > chrono::Duration::seconds(50) && ttl <= chrono::Duration::seconds(61),
        "expires in the ttl: {ttl}"
    );

    sqlx::query(
        "UPDATE leases SET expires_at = now() - interval '1 second' WHERE name = 'sweeper'",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    assert!(lease("sweeper", "b").await, "an expired lease passes on");
    assert!(!lease("sweeper", "a").await, "and its old holder lost it");
}

#[tokio::test]
async fn a_job_is_queued_pushed_claimed_and_completed() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let globex = tenant(&t.pool, "globex").await;
    let job = NewJob {
        options: JobOptions {
            language: Some("de".into()),
            tasks: vec![Task::Transcribe, Task::Summarize],
            summary: SummaryMode::Abstractive,
            summary_model: ModelTier::Strong,
            ..JobOptions::default()
        },
        ..new_job(acme, Lane::Interactive)
    };
    let created = db::insert_job(&t.pool, &job).await.unwrap();
    assert!((Utc::now() - created).num_seconds().abs() < 60, "{created}");

    let view = db::get_job(&t.pool, acme, job.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.id, job.id);
    assert_eq!(view.status, JobStatus::Queued);
    assert_eq!(view.lane, Lane::Interactive);
    assert_eq!(view.created_at, created);
    assert_eq!((view.started_at, view.finished_at), (None, None));
    assert_eq!(view.attempts, 0);
    assert!(view.result.is_none() && view.error.is_none());
    assert!(
        db::get_job(&t.pool, globex, job.id, None)
            .await
            .unwrap()
            .is_none(),
        "another tenant's job is not found"
    );
    assert!(db::get_job(&t.pool, acme, Uuid::new_v4(), None)
        .await
        .unwrap()
        .is_none());

    let waiting = QueuedJob {
        id: job.id,
        lane: Lane::Interactive,
        attempts: 0,
        abandoned: false,
    };
    assert_eq!(
        db::jobs_to_enqueue(&t.pool, MINUTE, 10).await.unwrap(),
        [waiting],
        "never pushed"
    );
    db::mark_enqueued(&t.pool, &[job.id]).await.unwrap();
    assert!(
        db::jobs_to_enqueue(&t.pool, MINUTE, 10)
            .await
            .unwrap()
            .is_empty(),
        "pushed a moment ago"
    );
    rewind(&t.pool, job.id, "enqueued_at").await;
    assert_eq!(
        db::jobs_to_enqueue(&t.pool, MINUTE, 10).await.unwrap(),
        [waiting],
        "pushed longer ago than `stale`: Redis may have lost it"
    );

    let run = claim(&t.pool, job.id, 3).await;
    assert_eq!(
        (run.id, run.tenant_id, &run.source, &run.options),
        (job.id, acme, &job.source, &job.options)
    );
    assert_eq!((run.attempts, run.version), (1, 1));
    let view = db::get_job(&t.pool, acme, job.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((view.status, view.attempts), (JobStatus::Processing, 1));
    assert!(view.started_at.is_some() && view.finished_at.is_none());
    let worker: Option<String> = sqlx::query_scalar("SELECT worker FROM jobs WHERE id = $1")
        .bind(job.id)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(worker.as_deref(), Some("worker-1"));
    assert!(
        db::jobs_to_enqueue(&t.pool, Duration::ZERO, 10)
            .await
            .unwrap()
            .is_empty(),
        "a running job is not pushed"
    );
    assert!(
        matches!(
            db::claim_job(&t.pool, job.id, "worker-2", 3, MINUTE)
                .await
                .unwrap(),
            Claim::Skip
        ),
        "a duplicate delivery of a live run is skipped"
    );

    assert!(db::touch_job(&t.pool, job.id, run.run).await.unwrap());
    assert!(
        !db::touch_job(&t.pool, job.id, Uuid::new_v4())
            .await
            .unwrap(),
        "another run's token"
    );

    let result = full_result();
    let timings = serde_json::json!({"fetch": 12, "decode": 34});
    assert_eq!(
        db::complete_job(
            &t.pool,
            &run,
            &result,
            "whisper-tiny.en",
            "worker-1",
            &timings,
            &[],
        )
        .await
        .unwrap(),
        Fenced::Done
    );
    let view = db::get_job(&t.pool, acme, job.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, JobStatus::Completed);
    assert!(view.finished_at.is_some() && view.error.is_none());
    assert_eq!(
        view.result.as_ref(),
        Some(&result),
        "the stored result reads back"
    );
    let (model, worker, version): (String, String, i32) =
        sqlx::query_as("SELECT model, worker, version FROM job_results WHERE job_id = $1")
            .bind(job.id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(
        (model.as_str(), worker.as_str(), version),
        ("whisper-tiny.en", "worker-1", 1)
    );
    let stored: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT timings FROM jobs WHERE id = $1")
            .bind(job.id)
            .fetch_one(&t.pool)
            .await
            .unwrap();
    assert_eq!(stored, Some(timings.clone()));

    assert_eq!(
        db::complete_job(&t.pool, &run, &result, "m", "worker-1", &timings, &[])
            .await
            .unwrap(),
        Fenced::Superseded,
        "a finished run cannot write again"
    );
    assert_eq!(result_versions(&t.pool, job.id).await, 1);
    assert!(!db::touch_job(&t.pool, job.id, run.run).await.unwrap());
    assert!(matches!(
        db::claim_job(&t.pool, job.id, "worker-2", 3, MINUTE)
            .await
            .unwrap(),
        Claim::Skip
    ));
}

#[tokio::test]
async fn a_result_without_scores_summary_or_rubric_reads_back_without_them() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let id = queued(&t.pool, acme, Lane::Interactive).await;
    let run = claim(&t.pool, id, 3).await;
    let result = JobResult {
        transcript: Transcript::empty("en", 0.5),
        scores: None,
        summary: None,
        rubric: None,
        usage: Usage::new(),
    };
    let done = db::complete_job(
        &t.pool,
        &run,
        &result,
        "m",
        "w",
        &serde_json::json!({}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(done, Fenced::Done);
    let nulls: (bool, bool, bool) = sqlx::query_as(
        "SELECT scores IS NULL, summary IS NULL, rubric IS NULL FROM job_results WHERE job_id = $1",
    )
    .bind(id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(nulls, (true, true, true), "absent parts are stored as NULL");
    let view = db::get_job(&t.pool, acme, id, None).await.unwrap().unwrap();
    assert_eq!(view.result, Some(result));
}

#[tokio::test]
async fn a_requeued_job_runs_again_and_a_failed_job_stays_failed() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let id = queued(&t.pool, acme, Lane::Interactive).await;
    let first = claim(&t.pool, id, 3).await;

    let requeued = db::requeue_job(&t.pool, &first, "provider-unavailable", "upstream 503")
        .await
        .unwrap();
    assert_eq!(requeued, Fenced::Done);
    let view = db::get_job(&t.pool, acme, id, None).await.unwrap().unwrap();
    assert_eq!((view.status, view.attempts), (JobStatus::Queued, 1));
    assert!(view.error.is_none(), "a queued job shows no error");
    let kept: (Option<String>, Option<String>, bool) = sqlx::query_as(
        "SELECT error_code, error_message, enqueued_at IS NOT NULL FROM jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&t.pool)
    .await
    .unwrap();
    assert_eq!(
        kept,
        (
            Some("provider-unavailable".into()),
            Some("upstream 503".into()),
            true
        ),
        "the error is kept for operators"
    );
    assert_eq!(
        db::requeue_job(&t.pool, &first, "x", "x").await.unwrap(),
        Fenced::Superseded,
        "the run gave the job up"
    );

    let second = claim(&t.pool, id, 3).await;
    assert_eq!(second.attempts, 2);
    assert_ne!(second.run, first.run, "each run draws a new token");
    let timings = serde_json::json!({"decode": 5});
    assert_eq!(
        db::fail_job(&t.pool, &first, "x", "x", &timings)
            .await
            .unwrap(),
        Fenced::Superseded,
        "a stale run cannot fail the job"
    );
    assert_eq!(status(&t.pool, acme, id).await, JobStatus::Processing);
    assert_eq!(
        db::fail_job(
            &t.pool,
            &second,
            "unsupported-codec",
            "codec 'HE-AAC' is not supported",
            &timings
        )
        .await
        .unwrap(),
        Fenced::Done
    );
    let view = db::get_job(&t.pool, acme, id, None).await.unwrap().unwrap();
    assert_eq!((view.status, view.attempts), (JobStatus::Failed, 2));
    assert!(view.finished_at.is_some() && view.result.is_none());
    let error = view.error.expect("a failed job shows its error");
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("unsupported-codec", "codec 'HE-AAC' is not supported")
    );

    assert_eq!(
        db::complete_job(&t.pool, &second, &full_result(), "m", "w", &timings, &[])
            .await
            .unwrap(),
        Fenced::Superseded,
        "a failed job never turns completed"
    );
    assert_eq!(status(&t.pool, acme, id).await, JobStatus::Failed);
    assert_eq!(result_versions(&t.pool, id).await, 0);
    assert_eq!(
        db::requeue_job(&t.pool, &second, "x", "x").await.unwrap(),
        Fenced::Superseded
    );
    assert!(matches!(
        db::claim_job(&t.pool, id, "worker-1", 3, MINUTE)
            .await
            .unwrap(),
        Claim::Skip
    ));
}

#[tokio::test]
async fn claims_take_over_lost_runs_and_stop_at_max_attempts() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;

    // A lost run is taken over while attempts remain, and the lost run is fenced off.
    let id = queued(&t.pool, acme, Lane::Interactive).await;
    let lost = claim(&t.pool, id, 3).await;
    rewind(&t.pool, id, "updated_at").await;
    let taken = claim(&t.pool, id, 3).await;
    assert_eq!(taken.attempts, 2);
    assert_ne!(taken.run, lost.run);
    assert!(!db::touch_job(&t.pool, id, lost.run).await.unwrap());
    assert!(db::touch_job(&t.pool, id, taken.run).await.unwrap());

    // A queued job whose attempts are used up fails as retries-exhausted.
    let id = queued(&t.pool, acme, Lane::Interactive).await;
    let run = claim(&t.pool, id, 1).await;
    db::requeue_job(&t.pool, &run, "provider-unavailable", "503")
        .await
        .unwrap();
    match db::claim_job(&t.pool, id, "worker-1", 1, MINUTE)
        .await
        .unwrap()
    {
        Claim::Exhausted { code } => assert_eq!(code, RETRIES_EXHAUSTED),
        other => panic!("expected exhausted, got {other:?}"),
    }
    let view = db::get_job(&t.pool, acme, id, None).await.unwrap().unwrap();
    assert_eq!((view.status, view.attempts), (JobStatus::Failed, 1));
    assert!(view.finished_at.is_some());
    let error = view.error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        (RETRIES_EXHAUSTED, "gave up after 1 attempts")
    );

    // A lost run whose job has no attempts left fails the job as worker-crashed.
    let id = queued(&t.pool, acme, Lane::Bulk).await;
    let run = claim(&t.pool, id, 1).await;
    rewind(&t.pool, id, "updated_at").await;
    match db::claim_job(&t.pool, id, "worker-1", 1, MINUTE)
        .await
        .unwrap()
    {
        Claim::Exhausted { code } => assert_eq!(code, WORKER_CRASHED),
        other => panic!("expected exhausted, got {other:?}"),
    }
    let error = db::get_job(&t.pool, acme, id, None)
        .await
        .unwrap()
        .unwrap()
        .error
        .unwrap();
    assert_eq!(error.code, WORKER_CRASHED);
    assert!(
        error.message.contains("each of 1 runs"),
        "{}",
        error.message
    );
    assert!(!db::touch_job(&t.pool, id, run.run).await.unwrap());
}

#[tokio::test]
async fn the_sweeper_requeues_or_fails_lost_runs_and_pushes_stale_jobs() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let max_attempts = 2;

    // Lost on its first attempt: requeued.
    let again = queued(&t.pool, acme, Lane::Bulk).await;
    let again_run = claim(&t.pool, again, max_attempts).await;
    rewind(&t.pool, again, "updated_at").await;
    // Lost on its last attempt: failed.
    let dead = queued(&t.pool, acme, Lane::Interactive).await;
    claim(&t.pool, dead, max_attempts).await;
    rewind(&t.pool, dead, "updated_at").await;
    claim(&t.pool, dead, max_attempts).await;
    rewind(&t.pool, dead, "updated_at").await;
    // Alive, and merely queued: left alone.
    let alive = queued(&t.pool, acme, Lane::Interactive).await;
    let alive_run = claim(&t.pool, alive, max_attempts).await;
    let waiting = queued(&t.pool, acme, Lane::Interactive).await;

    let out = db::recover_lost_runs(&t.pool, MINUTE, max_attempts, 10)
        .await
        .unwrap();
    assert_eq!(
        out.requeued,
        [QueuedJob {
            id: again,
            lane: Lane::Bulk,
            attempts: 1,
            abandoned: true,
        }]
    );
    assert_eq!(out.failed, [dead]);

    assert_eq!(status(&t.pool, acme, again).await, JobStatus::Queued);
    assert!(
        !db::touch_job(&t.pool, again, again_run.run).await.unwrap(),
        "the lost run's token is cleared"
    );
    let view = db::get_job(&t.pool, acme, dead, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((view.status, view.attempts), (JobStatus::Failed, 2));
    assert!(view.finished_at.is_some());
    let error = view.error.unwrap();
    assert_eq!(error.code, WORKER_CRASHED);
    assert!(
        error.message.contains("each of 2 runs"),
        "{}",
        error.message
    );
    assert_eq!(status(&t.pool, acme, alive).await, JobStatus::Processing);
    assert!(db::touch_job(&t.pool, alive, alive_run.run).await.unwrap());
    assert_eq!(status(&t.pool, acme, waiting).await, JobStatus::Queued);
    let again_run = claim(&t.pool, again, max_attempts).await;
    assert_eq!(again_run.attempts, 2, "the requeued job runs again");

    // Nothing is lost any more.
    let out = db::recover_lost_runs(&t.pool, MINUTE, max_attempts, 10)
        .await
        .unwrap();
    assert!(out.requeued.is_empty() && out.failed.is_empty(), "{out:?}");

    // `limit` bounds one sweep; the next sweep takes the rest.
    rewind(&t.pool, alive, "updated_at").await;
    rewind(&t.pool, again, "updated_at").await;
    // `alive` was rewound first, so it has been untouched the longest.
    let first = db::recover_lost_runs(&t.pool, MINUTE, 3, 1).await.unwrap();
    let second = db::recover_lost_runs(&t.pool, MINUTE, 3, 1).await.unwrap();
    let ids = |out: &db::LostRuns| out.requeued.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!((ids(&first), ids(&second)), (vec![alive], vec![again]));
    assert!(first.failed.is_empty() && second.failed.is_empty());

    // Stale pushes come oldest first, at most `limit` per lane.
    let jobs = [
        waiting,
        queued(&t.pool, acme, Lane::Bulk).await,
        queued(&t.pool, acme, Lane::Interactive).await,
    ];
    db::mark_enqueued(&t.pool, &[jobs[0], jobs[1], jobs[2], alive, again])
        .await
        .unwrap();
    for (job, secs) in jobs.iter().zip([300, 100, 200]) {
        rewind_by(&t.pool, *job, "enqueued_at", secs).await;
    }
    let stale: Vec<Uuid> = db::jobs_to_enqueue(&t.pool, MINUTE, 2)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(stale, [jobs[0], jobs[2], jobs[1]]);
    // …and the never-pushed interactive jobs have their own `limit`; never-pushed bulk
    // jobs are the dispatcher's (`batch::bulk_candidates`), not the sweeper's.
    let fresh = [
        queued(&t.pool, acme, Lane::Interactive).await,
        queued(&t.pool, acme, Lane::Interactive).await,
        queued(&t.pool, acme, Lane::Interactive).await,
    ];
    let backlog = queued(&t.pool, acme, Lane::Bulk).await;
    let found: Vec<Uuid> = db::jobs_to_enqueue(&t.pool, MINUTE, 2)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(found.len(), 5, "{found:?}");
    assert_eq!(found.iter().filter(|id| fresh.contains(id)).count(), 2);
    assert!(found.contains(&jobs[0]) && found.contains(&jobs[1]) && found.contains(&jobs[2]));
    assert!(!found.contains(&backlog));
}

// ---------------------------------------------------------------- batches

use voxq_shared::db::batch::{
    self, BatchAction, BatchStatus, Control, Created, Idempotency, JobFilter, NewBatch, NewItem,
    Reprocess, TenantLimits,
};

fn items(n: usize, tag: &str) -> Vec<NewItem> {
    (0..n)
        .map(|i| NewItem {
            job_id: Uuid::new_v4(),
            source: format!("s3://calls/{tag}-{i}.ogg"),
            options: JobOptions::default(),
            custom_id: Some(format!("{tag}-{i}")),
        })
        .collect()
}

fn new_batch(tenant_id: Uuid, idem: Option<(&str, &[u8])>) -> NewBatch {
    NewBatch {
        id: Uuid::new_v4(),
        tenant_id,
        lane: Lane::Bulk,
        options: JobOptions::default(),
        source: None,
        idempotency: idem.map(|(k, h)| Idempotency {
            key: k.into(),
            request_hash: h.to_vec(),
        }),
        traceparent: None,
    }
}

#[tokio::test]
async fn a_batch_is_created_once_per_idempotency_key_and_counted_from_its_items() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let b = new_batch(acme, Some(("k1", b"body-1")));
    let made = batch::create_batch(&t.pool, &b, &items(30, "a"))
        .await
        .unwrap();
    assert_eq!(made, Created::New(b.id));
    // The same key: the same batch, nothing inserted; another body: refused.
    let again = new_batch(acme, Some(("k1", b"body-1")));
    assert_eq!(
        batch::create_batch(&t.pool, &again, &items(30, "a"))
            .await
            .unwrap(),
        Created::Replayed(b.id)
    );
    let other = new_batch(acme, Some(("k1", b"body-2")));
    assert_eq!(
        batch::create_batch(&t.pool, &other, &items(3, "x"))
            .await
            .unwrap(),
        Created::KeyReused
    );
    // Keys are per tenant.
    let globex = tenant(&t.pool, "globex").await;
    let theirs = new_batch(globex, Some(("k1", b"body-9")));
    assert_eq!(
        batch::create_batch(&t.pool, &theirs, &items(2, "g"))
            .await
            .unwrap(),
        Created::New(theirs.id)
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE tenant_id = $1")
        .bind(acme)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 30);

    let view = batch::get_batch(&t.pool, Some(acme), b.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((view.total, view.counts["queued"]), (30, 30));
    assert_eq!(view.status, BatchStatus::Running);
    assert!(batch::get_batch(&t.pool, Some(globex), b.id)
        .await
        .unwrap()
        .is_none());
    // Pause holds the queued items; a second pause does not apply; resume releases.
    assert_eq!(
        batch::control_batch(&t.pool, acme, b.id, BatchAction::Pause)
            .await
            .unwrap(),
        Control::Done
    );
    let view = batch::get_batch(&t.pool, Some(acme), b.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (view.status, view.counts["paused"]),
        (BatchStatus::Paused, 30)
    );
    assert!(
        batch::bulk_candidates(&t.pool, 100)
            .await
            .unwrap()
            .iter()
            .all(|c| c.tenant_id != acme),
        "a paused batch's items are not handed out"
    );
    assert_eq!(
        batch::control_batch(&t.pool, acme, b.id, BatchAction::Pause)
            .await
            .unwrap(),
        Control::NotApplicable(BatchStatus::Paused)
    );
    assert_eq!(
        batch::control_batch(&t.pool, globex, b.id, BatchAction::Resume)
            .await
            .unwrap(),
        Control::NotFound
    );
    batch::control_batch(&t.pool, acme, b.id, BatchAction::Resume)
        .await
        .unwrap();
    assert_eq!(
        batch::bulk_candidates(&t.pool, 100).await.unwrap().len(),
        30 + 2
    );
    // Results come in submission order, after a seq.
    let page = batch::batch_results(&t.pool, b.id, 10, 5).await.unwrap();
    let seqs: Vec<i32> = page.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [11, 12, 13, 14, 15]);
    assert_eq!(page[0].custom_id.as_deref(), Some("a-10"));
    // Cancel: every queued item is cancelled, and the batch with it.
    batch::control_batch(&t.pool, acme, b.id, BatchAction::Cancel)
        .await
        .unwrap();
    let view = batch::get_batch(&t.pool, Some(acme), b.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (view.status, view.counts["cancelled"]),
        (BatchStatus::Cancelled, 30)
    );
}

#[tokio::test]
async fn the_bulk_backlog_is_handed_out_round_robin_within_tenant_limits() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let globex = tenant(&t.pool, "globex").await;
    batch::create_batch(&t.pool, &new_batch(acme, None), &items(50, "a"))
        .await
        .unwrap();
    batch::create_batch(&t.pool, &new_batch(globex, None), &items(3, "g"))
        .await
        .unwrap();
    let c = batch::bulk_candidates(&t.pool, 4).await.unwrap();
    assert_eq!(c.len(), 4 + 3, "at most 4 per tenant");
    let picked = batch::fair_pick(&c, 6, 0);
    let tenant_of = |id: Uuid| c.iter().find(|x| x.job.id == id).unwrap().tenant_id;
    let globex_n = picked.iter().filter(|j| tenant_of(j.id) == globex).count();
    assert_eq!(globex_n, 3, "the small tenant gets its share at once");
    db::mark_enqueued(&t.pool, &picked.iter().map(|j| j.id).collect::<Vec<_>>())
        .await
        .unwrap();
    // A tenant at its max_concurrent gets nothing more until a run ends.
    let limits = TenantLimits {
        max_concurrent: Some(3),
        max_jobs_per_day: None,
        allow_strong: true,
        allow_rubrics: true,
    };
    assert!(batch::set_tenant_limits(&t.pool, "acme", &limits)
        .await
        .unwrap());
    assert!(!batch::set_tenant_limits(&t.pool, "nobody", &limits)
        .await
        .unwrap());
    assert_eq!(batch::tenant_limits(&t.pool, acme).await.unwrap(), limits);
    let c = batch::bulk_candidates(&t.pool, 10).await.unwrap();
    assert!(
        c.iter().all(|x| x.tenant_id != acme),
        "acme has 3 handed out"
    );
    assert_eq!(batch::jobs_last_day(&t.pool, acme).await.unwrap(), 50);
}

#[tokio::test]
async fn listing_pages_by_keyset_and_reprocess_adds_a_version() {
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let b = new_batch(acme, None);
    let its = items(7, "r");
    batch::create_batch(&t.pool, &b, &its).await.unwrap();
    // Complete every job as version 1.
    for item in &its {
        let run = claim(&t.pool, item.job_id, 3).await;
        let result = JobResult {
            transcript: Transcript::empty("en", 1.0),
            scores: None,
            summary: None,
            rubric: None,
            usage: Usage::default(),
        };
        db::complete_job(
            &t.pool,
            &run,
            &result,
            "whisper-tiny.en",
            "w",
            &serde_json::json!({}),
            &[],
        )
        .await
        .unwrap();
    }
    let filter = JobFilter {
        batch: Some(b.id),
        ..JobFilter::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = batch::list_jobs(&t.pool, acme, &filter, after, 3)
            .await
            .unwrap();
        // A job created between pages is newer than every cursor: never on a later page.
        queued(&t.pool, acme, Lane::Interactive).await;
        seen.extend(page.iter().map(|j| j.id));
        if page.len() < 3 {
            break;
        }
        let last = page.last().unwrap();
        after = Some((last.created_at, last.id));
    }
    seen.sort();
    let mut want: Vec<Uuid> = its.iter().map(|i| i.job_id).collect();
    want.sort();
    assert_eq!(seen, want);

    let filter = JobFilter {
        batch: Some(b.id),
        model: Some("whisper-tiny.en".into()),
        ..JobFilter::default()
    };
    assert_eq!(
        batch::count_reprocess(&t.pool, Some(acme), &filter)
            .await
            .unwrap(),
        7
    );
    let r = Reprocess {
        batch_id: Uuid::new_v4(),
        owner: acme,
        tenant_id: Some(acme),
        job: None,
        filter,
        options_patch: serde_json::json!({"model": "base"}),
        lane: Lane::Bulk,
    };
    assert_eq!(batch::reprocess(&t.pool, &r).await.unwrap(), 7);
    let job = its[0].job_id;
    let view = db::get_job(&t.pool, acme, job, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (view.status, view.version, view.requested_version),
        (JobStatus::Queued, Some(1), 2)
    );
    let run = claim(&t.pool, job, 3).await;
    assert_eq!(
        (run.version, run.run_number),
        (2, 1),
        "a fresh attempt budget"
    );
    assert_eq!(run.options.model.as_deref(), Some("base"));
    // Nothing else matches while they are queued again.
    assert_eq!(
        batch::count_reprocess(&t.pool, Some(acme), &JobFilter::default())
            .await
            .unwrap(),
        0
    );
    let versions = batch::job_versions(&t.pool, acme, job)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(versions.len(), 1);
    assert!(batch::job_versions(&t.pool, Uuid::new_v4(), job)
        .await
        .unwrap()
        .is_none());
}

/// The webhook outbox: completing a job records one delivery per matching endpoint in
/// the same transaction; two dispatchers never take the same attempt; a retry waits
/// for its time; a delivery that gives up with no success since it was created
/// disables its endpoint and fails the endpoint's other pending deliveries.
#[tokio::test]
async fn the_webhook_outbox_is_written_with_the_result_and_taken_once() {
    use voxq_shared::db::webhooks::{self as wh, NewEndpoint, Outcome};
    use voxq_shared::webhooks::Event;
    let t = TestDb::new().await;
    let acme = tenant(&t.pool, "acme").await;
    let (completed, _) = wh::create_endpoint(
        &t.pool,
        acme,
        &NewEndpoint {
            url: "https://hooks.example.com/a".into(),
            events: vec![Event::JobCompleted],
            include_result: true,
            description: None,
        },
    )
    .await
    .unwrap();
    let (failed_only, _) = wh::create_endpoint(
        &t.pool,
        acme,
        &NewEndpoint {
            url: "https://hooks.example.com/b".into(),
            events: vec![Event::JobFailed],
            include_result: false,
            description: None,
        },
    )
    .await
    .unwrap();
    let id = queued(&t.pool, acme, Lane::Interactive).await;
    let run = claim(&t.pool, id, 3).await;
    let keys = ["transcript:abc".to_string()];
    db::complete_job(
        &t.pool,
        &run,
        &full_result(),
        "m",
        "w",
        &serde_json::json!({}),
        &keys,
    )
    .await
    .unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT cache_keys FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(stored, keys);

    // Two dispatchers at once: one takes the delivery, the other nothing.
    let hold = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        wh::take_due(&t.pool, 10, hold),
        wh::take_due(&t.pool, 10, hold)
    );
    let mut taken: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(
        taken.len(),
        1,
        "one delivery (the job.failed endpoint is filtered out)"
    );
    let d = taken.pop().unwrap();
    assert_eq!(d.endpoint_id, Some(completed.id));
    assert_eq!((d.attempts, d.in_schedule), (1, 1));
    assert!(d.secret.as_deref().is_some_and(|s| s.starts_with("whsec_")));
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["data"]["id"], id.to_string());
    assert!(body["data"]["result"]["text"].is_string(), "{body}");
    assert!(
        wh::take_due(&t.pool, 10, hold).await.unwrap().is_empty(),
        "held"
    );

    // A retry in a minute is not due now.
    let retry = Outcome::Retry {
        status: Some(500),
        error: "the receiver answered 500".into(),
        after: Duration::from_secs(60),
    };
    wh::record_attempt(&t.pool, &d, &retry, Duration::from_millis(12))
        .await
        .unwrap();
    assert!(wh::take_due(&t.pool, 10, hold).await.unwrap().is_empty());
    let view = wh::get_delivery(&t.pool, acme, d.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, "pending");
    assert_eq!(view.attempt_log.len(), 1);
    assert_eq!(view.attempt_log[0].status, Some(500));
    assert!(view.next_attempt_at.is_some());

    // A redelivery is due at once and starts the schedule over.
    assert!(wh::redeliver(&t.pool, acme, d.id).await.unwrap());
    let d = wh::take_due(&t.pool, 10, hold)
        .await
        .unwrap()
        .pop()
        .expect("due");
    assert_eq!((d.attempts, d.in_schedule), (2, 1));

    // Giving up with no success since the delivery was created disables the endpoint.
    let give_up = Outcome::GiveUp {
        status: Some(500),
        error: "the receiver answered 500; gave up".into(),
    };
    wh::record_attempt(&t.pool, &d, &give_up, Duration::from_millis(5))
        .await
        .unwrap();
    let endpoint = wh::get_endpoint(&t.pool, acme, completed.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!endpoint.enabled);
    assert!(endpoint
        .disabled_reason
        .unwrap()
        .contains("every attempt failed"));
    let other = wh::get_endpoint(&t.pool, acme, failed_only.id)
        .await
        .unwrap()
        .unwrap();
    assert!(other.enabled, "other endpoints are untouched");

    // A disabled endpoint gets no new deliveries.
    let id2 = queued(&t.pool, acme, Lane::Interactive).await;
    let run2 = claim(&t.pool, id2, 3).await;
    db::complete_job(
        &t.pool,
        &run2,
        &full_result(),
        "m",
        "w",
        &serde_json::json!({}),
        &[],
    )
    .await
    .unwrap();
    assert!(wh::take_due(&t.pool, 10, hold).await.unwrap().is_empty());

    // Deleting a job deletes its deliveries and results.
    assert!(voxq_shared::db::purge::delete_job(&t.pool, id)
        .await
        .unwrap()
        .is_some());
    assert!(wh::get_delivery(&t.pool, acme, d.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        voxq_shared::db::purge::delete_job(&t.pool, id)
            .await
            .unwrap()
            .map(|j| j.id),
        None
    );
}
