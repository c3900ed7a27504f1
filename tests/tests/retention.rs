//! Deletion and retention through the real stack: `DELETE /v1/jobs/{id}` removes the
//! job, its result versions, its uploaded audio in S3, its cache entries and its queue
//! tasks, also while it runs; the retention purge deletes uploads and jobs past their
//! tenant's retention and touches nothing else.

use std::time::{Duration, Instant};

use serde_json::Value;
use shared::config::Config;
use shared::objects::{ObjectError, ObjectStore};
use uuid::Uuid;
use voxq_tests::{db, job_source, root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(120);
const NOTE: &str = "fixtures/voice/01-running-late.ogg";

async fn objects(stack: &Stack) -> ObjectStore {
    let env = &stack.config.env;
    ObjectStore::connect(&Config {
        s3_endpoint: env["VOXQ_S3_ENDPOINT"].clone(),
        s3_bucket: env["VOXQ_S3_BUCKET"].clone(),
        s3_region: env["VOXQ_S3_REGION"].clone(),
        ..Config::default()
    })
    .await
}

/// Whether the object of an `s3://bucket/key` source exists.
async fn exists(objects: &ObjectStore, source: &str) -> bool {
    let (bucket, key) = source
        .strip_prefix("s3://")
        .and_then(|s| s.split_once('/'))
        .expect("an s3:// source");
    match objects.get(bucket, key, 1 << 30).await {
        Ok(_) => true,
        Err(ObjectError::NotFound { .. }) => false,
        Err(e) => panic!("S3: {e}"),
    }
}

async fn redis(stack: &Stack) -> redis::aio::MultiplexedConnection {
    redis::Client::open(stack.config.env["VOXQ_REDIS_URL"].as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

async fn delete(stack: &Stack, key: &str, id: Uuid) -> u16 {
    stack
        .http
        .delete(format!("{}/v1/jobs/{id}", stack.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("DELETE")
        .status()
        .as_u16()
}

async fn count(pool: &sqlx::PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_job_removes_it_everywhere_even_while_it_runs() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let (objects, pool, mut redis) = (
        objects(&stack).await,
        db(&stack.config).await,
        redis(&stack).await,
    );
    let prefix = stack.config.env["VOXQ_QUEUE_PREFIX"].clone();

    let id = stack.upload(&root().join(NOTE)).await;
    assert_eq!(stack.wait_done(id, DONE).await["status"], "completed");
    let source = job_source(&stack.config, id).await;
    assert!(exists(&objects, &source).await, "the upload is in S3");
    let cache_keys: Vec<String> = sqlx::query_scalar("SELECT cache_keys FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        cache_keys.len(),
        1,
        "the run recorded its transcript cache entry"
    );
    let cache = format!("{prefix}:cache:{}", cache_keys[0]);
    let cached: bool = redis::cmd("EXISTS")
        .arg(&cache)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(cached, "{cache} exists before");
    let data = format!("{prefix}:interactive:data");
    let task = format!("{id}:0");
    let queued: bool = redis::cmd("HEXISTS")
        .arg(&data)
        .arg(&task)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(queued, "the queue task {task} exists before");

    // Another tenant cannot delete it, and does not learn it exists.
    let other = stack.create_key(
        &format!("other-{}", Uuid::new_v4().simple()),
        "jobs:write,jobs:read",
    );
    assert_eq!(delete(&stack, &other, id).await, 404);
    assert_eq!(delete(&stack, &stack.key, id).await, 204);
    assert_eq!(stack.get_job(&stack.key, id).await.status(), 404);
    assert_eq!(
        delete(&stack, &stack.key, id).await,
        404,
        "a second DELETE: 404"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE id = $1", id).await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM job_results WHERE job_id = $1",
            id
        )
        .await,
        0
    );
    assert!(
        !exists(&objects, &source).await,
        "the upload is gone from S3"
    );
    let cached: bool = redis::cmd("EXISTS")
        .arg(&cache)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!cached, "the cache entry is gone");
    let queued: bool = redis::cmd("HEXISTS")
        .arg(&data)
        .arg(&task)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!queued, "the queue task is gone");

    // While it runs: the run's result is discarded and the worker goes on.
    let long = stack.upload(&voxq_tests::long_recording()).await;
    stack.wait_status(long, &["processing"], DONE).await;
    assert_eq!(delete(&stack, &stack.key, long).await, 204);
    assert_eq!(stack.get_job(&stack.key, long).await.status(), 404);
    let next = stack.upload(&root().join(NOTE)).await;
    assert_eq!(stack.wait_done(next, DONE).await["status"], "completed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE id = $1", long).await,
        0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM job_results WHERE job_id = $1",
            long
        )
        .await,
        0
    );
    assert!(stack.workers[0].is_running(), "the worker survived");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_purges_audio_and_results_and_nothing_else() {
    let _serial = serial().await;
    let mut stack = Stack::start(
        StackConfig::from_env()
            .set("VOXQ_BENCH_NOOP_TRANSCRIBE", "true")
            .set("VOXQ_PURGE_INTERVAL_S", 1)
            // The service keeps everything; the tenants below override it.
            .set("VOXQ_AUDIO_RETENTION_S", 0)
            .set("VOXQ_RESULT_RETENTION_S", 0),
    )
    .await;
    let (objects, pool) = (objects(&stack).await, db(&stack.config).await);
    let tenant = |name: &str| format!("{name}-{}", Uuid::new_v4().simple());
    let (audio_tenant, result_tenant, keep_tenant) =
        (tenant("audio"), tenant("results"), tenant("keep"));
    let audio_key = stack.create_key(&audio_tenant, "jobs:write,jobs:read");
    let result_key = stack.create_key(&result_tenant, "jobs:write,jobs:read");
    let keep_key = stack.create_key(&keep_tenant, "jobs:write,jobs:read");
    let (ok, out) = stack.admin(&[
        "retention",
        "--tenant",
        &audio_tenant,
        "--audio-retention-s",
        "2",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = stack.admin(&[
        "retention",
        "--tenant",
        &result_tenant,
        "--result-retention-s",
        "3",
    ]);
    assert!(ok, "{out}");

    // The audio tenant also reads a granted S3 prefix: that object is its own, never ours
    // to delete.
    let own = format!("own/{}/note.ogg", Uuid::new_v4().simple());
    objects
        .put(
            &own,
            std::fs::read(root().join(NOTE)).unwrap().into(),
            "audio/ogg",
        )
        .await
        .unwrap();
    let own_prefix = format!(
        "s3://{}/{}",
        objects.bucket(),
        own.rsplit_once('/').unwrap().0
    ) + "/";
    let (ok, out) = stack.admin(&["sources", "grant", "--tenant", &audio_tenant, &own_prefix]);
    assert!(ok, "{out}");
    let own_source = format!("s3://{}/{own}", objects.bucket());

    let a = stack.upload_as(&audio_key, &root().join(NOTE), &[]).await;
    let granted = {
        let r = stack
            .post_json(&audio_key, serde_json::json!({"audio_url": own_source}))
            .await;
        let body: Value = r.json().await.unwrap();
        Uuid::parse_str(body["id"].as_str().expect("accepted")).unwrap()
    };
    let r = stack.upload_as(&result_key, &root().join(NOTE), &[]).await;
    let k = stack.upload_as(&keep_key, &root().join(NOTE), &[]).await;
    let sources: Vec<String> =
        futures::future::join_all([a, r, k].map(|id| job_source(&stack.config, id))).await;
    stack.start_worker();
    for id in [a, granted, r, k] {
        let deadline = Instant::now() + DONE;
        loop {
            let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
            if status == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} is {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let audio_gone = !exists(&objects, &sources[0]).await;
        let job_gone = count(&pool, "SELECT count(*) FROM jobs WHERE id = $1", r).await == 0;
        if audio_gone && job_gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not act: audio gone {audio_gone}, job gone {job_gone}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Audio retention: the upload is gone, the job and its result stay.
    let job: Value = stack.get_job(&audio_key, a).await.json().await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["result"].is_object(), "{job}");
    let purged: bool =
        sqlx::query_scalar("SELECT audio_deleted_at IS NOT NULL FROM jobs WHERE id = $1")
            .bind(a)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(purged);
    // The tenant's own object is untouched.
    assert!(
        exists(&objects, &own_source).await,
        "a granted source is never deleted"
    );
    assert_eq!(stack.get_job(&audio_key, granted).await.status(), 200);
    // Result retention: the job, its result and its upload are gone.
    assert_eq!(stack.get_job(&result_key, r).await.status(), 404);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM job_results WHERE job_id = $1",
            r
        )
        .await,
        0
    );
    assert!(!exists(&objects, &sources[1]).await);
    // The tenant with the service's settings (keep everything): untouched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(exists(&objects, &sources[2]).await);
    let kept: Value = stack.get_job(&keep_key, k).await.json().await.unwrap();
    assert_eq!(kept["status"], "completed");
}
