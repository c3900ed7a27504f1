//! The Redis queue against the real Redis: large backlogs.

use shared::config::Config;
use shared::db::QueuedJob;
use shared::domain::Lane;
use shared::queue::{self, JobQueue};
use uuid::Uuid;
use voxq_tests::required_env;

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_ten_thousand_is_promoted_in_chunks() {
    let config = Config {
        redis_url: required_env("VOXQ_REDIS_URL"),
        queue_prefix: format!("voxq-test-{}", &Uuid::new_v4().simple().to_string()[..12]),
        ..Config::default()
    };
    let mut conn = redis::Client::open(config.redis_url.as_str())
        .unwrap()
        .get_connection_manager()
        .await
        .unwrap();
    let q = JobQueue::new(&config, conn.clone());
    let jobs: Vec<QueuedJob> = (0..10_000)
        .map(|_| QueuedJob {
            id: Uuid::new_v4(),
            lane: Lane::Bulk,
            attempts: 0,
            abandoned: false,
        })
        .collect();
    q.push_many(&jobs).await.expect("chunked push");
    let lane = queue::lane_config(&config, Lane::Bulk, 1);
    let scheduled: usize = redis::cmd("ZCARD")
        .arg(lane.scheduled_jobs_set())
        .query_async(&mut conn)
        .await
        .unwrap();
    // apalis-redis parks every push in the scheduled set: 10,000 due ids, more than its
    // fetch script can promote in one `unpack`.
    assert_eq!(scheduled, 10_000);

    let moved = queue::promote_due(&mut conn, &config, Lane::Bulk)
        .await
        .unwrap();
    assert_eq!(moved, 10_000);
    let (scheduled, active): (usize, usize) = redis::pipe()
        .cmd("ZCARD")
        .arg(lane.scheduled_jobs_set())
        .cmd("LLEN")
        .arg(lane.active_jobs_list())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((scheduled, active), (0, 10_000));
    // Pushing the same runs again changes nothing (task ids are idempotent).
    q.push_many(&jobs[..100]).await.unwrap();
    assert_eq!(
        queue::promote_due(&mut conn, &config, Lane::Bulk)
            .await
            .unwrap(),
        0
    );

    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", config.queue_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}
