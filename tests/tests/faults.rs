//! Fault tests: a worker killed mid-job, Redis and PostgreSQL restarted during a run.
//! Redis and PostgreSQL here are throwaway servers on free ports, so they can be killed
//! without disturbing the shared ones.

use std::time::Duration;

use voxq_tests::{
    attempts, db, long_recording, result_versions, root, serial, Stack, StackConfig, TempPostgres,
    TempRedis,
};

const DONE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_worker_is_killed_completes_exactly_once() {
    let _serial = serial().await;
    let mut stack = Stack::start(StackConfig::from_env()).await;
    stack.start_worker();
    let long = long_recording();
    let id = stack.upload(&long).await;
    stack.wait_status(id, &["processing"], DONE).await;
    stack.workers[0].kill9();

    // A new worker (new name) finds the dead worker's job once its heartbeats stop.
    stack.start_worker();
    let job = stack.wait_done(id, DONE).await;
    assert_eq!(job["status"], "completed", "{job}");
    let pool = db(&stack.config).await;
    assert_eq!(result_versions(&pool, id).await, 1, "exactly one result");
    assert_eq!(
        attempts(&pool, id).await,
        2,
        "the killed run counts as an attempt"
    );
    assert_eq!(
        job["result"]["text"].as_str().unwrap(),
        voxq_tests::local_text(&long)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_during_a_run_loses_nothing() {
    let _serial = serial().await;
    let mut redis = TempRedis::start();
    let config = StackConfig::from_env()
        .set("VOXQ_REDIS_URL", redis.url())
        .set("VOXQ_REQUEUE_AFTER_S", "2");
    let mut stack = Stack::start(config).await;
    stack.start_worker();
    let notes = [
        "01-running-late.ogg",
        "04-dentist-reminder.m4a",
        "07-sounds-perfect.opus",
        "09-parking.flac",
        "13-keys-under-pot.webm",
    ];
    let ids = stack.upload_voice_notes(&notes).await;
    stack
        .wait_status(ids[0], &["processing", "completed"], DONE)
        .await;

    // Redis dies with everything it held (no persistence, like the shared one).
    redis.kill();
    // Jobs submitted while Redis is down are still accepted: PostgreSQL holds them.
    let during = stack
        .upload_voice_notes(&["02-call-me-back.wav", "14-almost-there.mp3"])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();

    let pool = db(&stack.config).await;
    for id in ids.iter().chain(&during) {
        let job = stack.wait_done(*id, DONE).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(
            result_versions(&pool, *id).await,
            1,
            "job {id}: exactly one result"
        );
    }
    assert!(
        stack.workers[0].is_running(),
        "the worker survived the Redis restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_during_a_run_loses_nothing() {
    let _serial = serial().await;
    let pg = TempPostgres::start();
    let config = StackConfig::from_env().set("VOXQ_DATABASE_URL", pg.url());
    let mut stack = Stack::start(config).await;
    stack.start_worker();
    let notes = [
        "03-grocery-list.webm",
        "06-project-update.ogg",
        "08-flight-delayed.mp3",
        "10-birthday-party.wav",
        "11-plumber-voicemail.m4a",
        "12-yes-that-works.flac",
    ];
    let ids = stack.upload_voice_notes(&notes).await;
    stack
        .wait_status(ids[0], &["processing", "completed"], DONE)
        .await;

    pg.stop_server();
    // The API says so instead of accepting what it cannot store.
    let r = stack
        .post_file(
            &stack.key,
            &root().join("fixtures/voice/05-on-my-way.wav"),
            &[],
        )
        .await;
    assert_eq!(r.status(), 503, "POST while PostgreSQL is down");
    assert!(r.headers().contains_key("retry-after"));
    let ready = stack.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_server();

    let pool = db(&stack.config).await;
    for id in &ids {
        let job = stack.wait_done(*id, DONE).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(
            result_versions(&pool, *id).await,
            1,
            "job {id}: exactly one result"
        );
    }
    assert!(
        stack.workers[0].is_running(),
        "the worker survived the PostgreSQL restart"
    );
    let after = stack
        .upload(&root().join("fixtures/voice/05-on-my-way.wav"))
        .await;
    assert_eq!(stack.wait_done(after, DONE).await["status"], "completed");
}
