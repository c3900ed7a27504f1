//! The job life cycle under workers that die or stall: a job that kills its worker every
//! time ends `failed` instead of taking down the fleet, and a run that lost its job to a
//! newer run cannot write over it.

use std::time::{Duration, Instant};

use shared::db::{Claim, Fenced};
use shared::domain::{JobOptions, JobResult, Lane, Transcript};
use voxq_tests::{db, long_recording, result_versions, root, serial, Stack, StackConfig};

const DONE: Duration = Duration::from_secs(180);

/// `status`, `attempts` and `worker` of a job, read from PostgreSQL.
async fn job_row(pool: &sqlx::PgPool, id: uuid::Uuid) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, attempts, worker FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job row")
}

/// A new queued job of a new tenant, straight in the database (no API, no queue): for
/// tests of the life-cycle queries themselves.
async fn queued_job(lane: Lane) -> (sqlx::PgPool, uuid::Uuid) {
    let pool = db(&StackConfig::from_env()).await;
    shared::db::migrate(&pool).await.expect("migrations");
    let tenant = format!("lifecycle-{}", uuid::Uuid::new_v4().simple());
    let key = shared::db::create_api_key(&pool, &tenant, &["jobs:read".into()])
        .await
        .unwrap();
    let job = shared::db::NewJob {
        id: uuid::Uuid::new_v4(),
        tenant_id: key.tenant_id,
        lane,
        source: "s3://b/k.ogg".into(),
        options: JobOptions::default(),
        traceparent: None,
    };
    shared::db::insert_job(&pool, &job).await.unwrap();
    (pool, job.id)
}

/// Makes the job's run look lost: no touch for a minute, as when its worker died.
async fn stop_touching(pool: &sqlx::PgPool, id: uuid::Uuid) {
    sqlx::query("UPDATE jobs SET updated_at = now() - interval '1 minute' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

/// Whether a worker name (`<host>-<pid>-<nonce>-<lane>-<restarts>`) is this process's.
fn is_worker_of(name: &str, pid: u32) -> bool {
    name.contains(&format!("-{pid}-"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_kills_its_worker_every_time_fails_while_other_jobs_complete() {
    let _serial = serial().await;
    let max_attempts = 3;
    let mut stack =
        Stack::start(StackConfig::from_env().set("VOXQ_MAX_ATTEMPTS", max_attempts)).await;
    stack.start_worker();
    stack.start_worker();
    let pool = db(&stack.config).await;
    let poison = stack.upload(&long_recording()).await;
    let notes = [
        "02-call-me-back.wav",
        "05-on-my-way.wav",
        "07-sounds-perfect.opus",
        "12-yes-that-works.flac",
    ];
    let mut others = stack.upload_voice_notes(&notes[..1]).await;

    // Whichever worker claims the poison job is killed (-9) at once, as an out-of-memory
    // kill or an abort in native code would, and replaced by a new worker.
    let mut kills = 0;
    let deadline = Instant::now() + DONE;
    loop {
        let (status, attempts, worker) = job_row(&pool, poison).await;
        if status == "failed" || status == "completed" {
            break;
        }
        if status == "processing" && attempts > kills {
            let name = worker.expect("a claimed job names its worker");
            let victim = stack
                .workers
                .iter()
                .position(|w| is_worker_of(&name, w.pid()))
                .unwrap_or_else(|| panic!("no live worker is {name}"));
            stack.workers[victim].kill9();
            stack.workers.remove(victim);
            kills += 1;
            stack.start_worker();
            // Traffic goes on while the poison job is retried.
            if let Some(note) = notes.get(kills as usize) {
                others.extend(stack.upload_voice_notes(&[note]).await);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the poison job is still {status} after {kills} kills (attempts {attempts})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let job = stack.wait_done(poison, DONE).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "worker-crashed", "{job}");
    assert_eq!(job["attempts"], max_attempts, "{job}");
    assert_eq!(
        kills, max_attempts,
        "one kill per attempt, then no more runs"
    );
    assert!(job["result"].is_null());
    for id in others {
        let job = stack.wait_done(id, DONE).await;
        assert_eq!(job["status"], "completed", "{job}");
    }
    // The failed job is not claimed again by anyone.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (status, attempts, _) = job_row(&pool, poison).await;
    assert_eq!((status.as_str(), attempts), ("failed", max_attempts));
    for w in &mut stack.workers {
        assert!(w.is_running(), "{} died:\n{}", w.name, w.log_text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_worker_cannot_write_over_the_run_that_replaced_it() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let pool = db(&stack.config).await;
    let id = stack.upload(&long_recording()).await;
    stack.wait_status(id, &["processing"], DONE).await;
    // The worker stops (a long GC pause, a frozen VM, SIGSTOP) past its heartbeats…
    let paused = stack.workers[0].pid();
    stack.workers[0].signal("STOP");
    let second = stack.start_worker();
    let replacement = stack.workers[second].pid();
    // …until a new run of the job has started on another worker.
    let deadline = Instant::now() + DONE;
    loop {
        let (status, attempts, worker) = job_row(&pool, id).await;
        if attempts == 2
            && worker
                .as_deref()
                .is_some_and(|w| is_worker_of(w, replacement))
        {
            assert_eq!(status, "processing");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no second run: {status} {attempts} {worker:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The paused worker resumes, further along in the job than the new run.
    stack.workers[0].signal("CONT");

    let job = stack.wait_done(id, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    // Give the resumed run time to reach its end, had it not been fenced off.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(result_versions(&pool, id).await, 1);
    let writer: String = sqlx::query_scalar("SELECT worker FROM job_results WHERE job_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        is_worker_of(&writer, replacement),
        "the result was written by {writer}, not by the run that owned the job (pid {replacement}); paused pid {paused}"
    );
    let job = stack.job(id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["attempts"], 2);
    // Both workers are still serving.
    let next = stack
        .upload(&root().join("fixtures/voice/02-call-me-back.wav"))
        .await;
    assert_eq!(stack.wait_done(next, DONE).await["status"], "completed");
}

/// The fence itself, on the real database: once a newer run has claimed a job, every
/// write of the older run is refused, whatever it tries, and a finished job stays as its
/// owner left it. (End to end, apalis usually also cancels a resumed worker's task; the
/// database is what guarantees it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_run_can_neither_complete_fail_requeue_nor_touch_the_job() {
    let (pool, id) = queued_job(Lane::Interactive).await;
    let lost = Duration::from_secs(3);
    let claim = |worker: &'static str| {
        let pool = pool.clone();
        async move {
            match shared::db::claim_job(&pool, id, worker, 5, lost)
                .await
                .unwrap()
            {
                Claim::Run(run) => Some(run),
                _ => None,
            }
        }
    };
    let old = claim("old").await.expect("first claim");
    // A live run is not claimed twice.
    assert!(
        claim("twin").await.is_none(),
        "a job runs at most once at a time"
    );
    // The old run stops touching the job (a paused worker) and a new run claims it.
    stop_touching(&pool, id).await;
    let new = claim("new").await.expect("a lost run is claimed again");
    assert_ne!(old.run, new.run);
    assert_eq!(new.attempts, 2);

    let result = JobResult {
        transcript: Transcript::empty("en", 1.0),
        scores: None,
        summary: None,
        rubric: None,
        usage: Default::default(),
    };
    let timings = serde_json::json!({});
    assert!(!shared::db::touch_job(&pool, id, old.run).await.unwrap());
    assert_eq!(
        shared::db::complete_job(&pool, &old, &result, "m", "old", &timings, &[])
            .await
            .unwrap(),
        Fenced::Superseded
    );
    assert_eq!(
        shared::db::fail_job(&pool, &old, "x", "x", &timings)
            .await
            .unwrap(),
        Fenced::Superseded
    );
    assert_eq!(
        shared::db::requeue_job(&pool, &old, "x", "x")
            .await
            .unwrap(),
        Fenced::Superseded
    );
    assert_eq!(
        result_versions(&pool, id).await,
        0,
        "the stale run stored nothing"
    );
    let (status, attempts, worker) = job_row(&pool, id).await;
    assert_eq!(
        (status.as_str(), attempts, worker.as_deref()),
        ("processing", 2, Some("new"))
    );

    // The owner fails it; a late complete by the same run changes nothing: a failed job
    // never turns completed behind the client's back.
    assert!(shared::db::touch_job(&pool, id, new.run).await.unwrap());
    assert_eq!(
        shared::db::fail_job(&pool, &new, "decode-failed", "bad", &timings)
            .await
            .unwrap(),
        Fenced::Done
    );
    assert_eq!(
        shared::db::complete_job(&pool, &new, &result, "m", "new", &timings, &[])
            .await
            .unwrap(),
        Fenced::Superseded
    );
    assert_eq!(job_row(&pool, id).await.0, "failed");
    assert!(
        claim("after").await.is_none(),
        "a finished job is not claimed again"
    );
}

/// A job at its last attempt whose run was lost is failed by the claim, not run again.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_at_the_attempt_limit_fails_the_job_as_worker_crashed() {
    let (pool, id) = queued_job(Lane::Bulk).await;
    let lost = Duration::from_secs(3);
    for attempt in 1..=2 {
        match shared::db::claim_job(&pool, id, "w", 2, lost)
            .await
            .unwrap()
        {
            Claim::Run(run) => assert_eq!(run.attempts, attempt),
            other => panic!("attempt {attempt}: {other:?}"),
        }
        // The worker dies.
        stop_touching(&pool, id).await;
    }
    match shared::db::claim_job(&pool, id, "w", 2, lost)
        .await
        .unwrap()
    {
        Claim::Exhausted { code } => assert_eq!(code, "worker-crashed"),
        other => panic!("third claim: {other:?}"),
    }
    let (status, attempts, _) = job_row(&pool, id).await;
    assert_eq!((status.as_str(), attempts), ("failed", 2));
    let code: Option<String> = sqlx::query_scalar("SELECT error_code FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(code.as_deref(), Some("worker-crashed"));
}

/// One sweeper acts at a time: the lease goes to one holder, is renewed by it, and
/// passes to another only once it has expired (its holder died).
#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_lease_has_one_holder_at_a_time() {
    let config = StackConfig::from_env();
    let pool = db(&config).await;
    shared::db::migrate(&pool).await.expect("migrations");
    let name = format!("test-lease-{}", uuid::Uuid::new_v4().simple());
    let ttl = Duration::from_millis(800);
    let lease = |holder: &'static str| {
        let (pool, name) = (pool.clone(), name.clone());
        async move {
            shared::db::try_lease(&pool, &name, holder, ttl)
                .await
                .unwrap()
        }
    };
    assert!(lease("a").await, "a free lease is taken");
    assert!(
        !lease("b").await,
        "a held lease is refused to another holder"
    );
    assert!(lease("a").await, "its holder renews it");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(lease("a").await, "renewed before it expired");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!lease("b").await, "the renewal moved the expiry on");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        lease("b").await,
        "an expired lease passes to another holder"
    );
    assert!(!lease("a").await, "and the old holder no longer has it");
}
