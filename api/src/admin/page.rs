//! The dashboard's pages. The overview is the fleet's (lanes, jobs per minute,
//! workers); failures, batches and jobs are the key's tenant's; costs are the tenant's,
//! or every tenant's for an `operator` key.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;
use shared::db::admin::WorkerActivity;
use shared::domain::{JobStatus, Lane};
use uuid::Uuid;

use super::session::Admin;
use super::view::{self, ago, badge, post_button, progress, usd, when, Chrome, Nav};
use super::AdminError;
use crate::app::AppState;

/// How far back failures and worker activity are shown.
const WINDOW: Duration = Duration::from_secs(24 * 3600);
const WORKER_WINDOW: Duration = Duration::from_secs(3600);
/// Jobs listed per error code.
const JOBS_PER_CODE: u32 = 10;
const BATCHES_SHOWN: i64 = 25;
const CHART_MINUTES: u32 = 60;

/// What the last action did, named by the redirect that followed it.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    batch: Option<Uuid>,
}

impl Notice {
    /// A fixed sentence per action (the query cannot inject text beyond a batch id).
    fn text(&self) -> Option<String> {
        let batch = self
            .batch
            .map(|b| format!(" (reprocess batch {b})"))
            .unwrap_or_default();
        Some(match self.notice.as_deref()? {
            "retried" => {
                format!("Retry started: the job runs again as it was, in its own lane{batch}.")
            }
            "reprocessed" => {
                format!("Reprocess started: the job is queued for its next result version{batch}.")
            }
            "paused" => "Batch paused: its queued items wait until it is resumed.".into(),
            "resumed" => "Batch resumed: its held items are queued again.".into(),
            _ => return None,
        })
    }
}

/// The notice of the last action; a query string that does not fit shows none.
fn notice_text(q: Result<Query<Notice>, QueryRejection>) -> Option<String> {
    q.ok().and_then(|Query(n)| n.text())
}

async fn chrome(state: &AppState, admin: &Admin, nav: Nav) -> Result<Chrome, AdminError> {
    let tenant = shared::db::admin::tenant_name(&state.db, admin.tenant_id())
        .await?
        .unwrap_or_else(|| admin.tenant_id().to_string());
    Ok(Chrome {
        tenant,
        scopes: admin.key().scopes.join(", "),
        csrf: admin.csrf_token(),
        nav,
    })
}

// ---------------------------------------------------------------- overview

/// `GET /admin`: lanes, jobs per minute, workers.
pub async fn overview(
    State(state): State<AppState>,
    admin: Admin,
    notice: Result<Query<Notice>, QueryRejection>,
) -> Result<Response, AdminError> {
    let chrome = chrome(&state, &admin, Nav::Overview).await?;
    let levels = shared::db::levels(&state.db).await?;
    let throughput = shared::db::admin::lane_throughput(&state.db).await?;
    let minutes = shared::db::admin::jobs_per_minute(&state.db, CHART_MINUTES).await?;
    let (workers, redis_error) = workers(&state).await?;
    let mut waiting = BTreeMap::new();
    for lane in Lane::ALL {
        match state.queue.waiting(&state.config, lane).await {
            Ok(n) => {
                waiting.insert(lane.as_str(), n);
            }
            Err(e) => {
                tracing::warn!(error = %e, lane = lane.as_str(), "cannot read the queue depth")
            }
        }
    }
    let open = |status: &str, lane: Lane| {
        levels
            .open_jobs
            .iter()
            .filter(|(s, l, _)| s == status && l == lane.as_str())
            .map(|(_, _, n)| *n)
            .sum::<i64>()
    };
    let backlog: i64 = levels.bulk_backlog.iter().map(|(_, n)| n).sum();
    let finished_hour: i64 = minutes.iter().map(|m| m.completed + m.failed).sum();
    let failed_hour: i64 = minutes.iter().map(|m| m.failed).sum();
    let now_minute = minutes.last().map_or(0, |m| m.completed + m.failed);
    let alive = workers.iter().filter(|w| w.alive(&state)).count();

    let body = html! {
        div.panel {
            div.stats {
                div { small { "finished, last 60 min" } span.big #finished-hour { (finished_hour) } }
                div { small { "failed, last 60 min" } span.big { (failed_hour) } }
                div { small { "this minute" } span.big { (now_minute) } }
                div { small { "workers alive" } span.big #workers-alive { (alive) } }
                div { small { "webhooks pending" } span.big { (levels.webhooks_pending) } }
            }
        }
        div.grid.split {
            div.panel #lanes {
                h2 { "Queue depth and throughput per lane" }
                table {
                    tr {
                        th { "lane" } th.n { "in Redis" } th.n { "queued" } th.n { "running" }
                        th.n { "per min (5 min)" } th.n { "completed 1 h" } th.n { "failed 1 h" }
                    }
                    @for lane in Lane::ALL {
                        @let t = throughput.iter().find(|t| t.lane == lane.as_str()).cloned().unwrap_or_default();
                        tr data-lane=(lane.as_str()) {
                            td { b { (lane.as_str()) } }
                            td.n.waiting { @match waiting.get(lane.as_str()) { Some(n) => { (n) } None => { "?" } } }
                            td.n.queued { (open("queued", lane)) }
                            td.n.processing { (open("processing", lane)) }
                            td.n { (format!("{:.1}", (t.completed_5m + t.failed_5m) as f64 / 5.0)) }
                            td.n.completed { (t.completed_60m) }
                            td.n.failed { (t.failed_60m) }
                        }
                    }
                }
                p.note {
                    "In Redis: tasks waiting to be claimed. Queued and running: jobs in PostgreSQL. "
                    "Bulk backlog not yet handed to Redis by the fair dispatcher: " b { (backlog) } " job(s)."
                    @if admin.is_operator() && !levels.bulk_backlog.is_empty() {
                        " By tenant: "
                        @for (i, (tenant, n)) in levels.bulk_backlog.iter().enumerate() {
                            @if i > 0 { ", " } (tenant) " " (n)
                        }
                        "."
                    }
                    " Every tenant's jobs (fleet-wide)."
                }
            }
            div.panel #jobs-per-minute {
                h2 { "Jobs finished per minute, last hour" }
                (view::minute_chart(&minutes))
                p.note { "Green: completed; red: failed. Every tenant's jobs; hover a bar for its counts." }
            }
        }
        div.panel #workers {
            h2 { "Workers" }
            @if let Some(e) = &redis_error { div.error { (e) } }
            @if workers.is_empty() {
                p { "No worker has sent a heartbeat or run a job in the last hour." }
            } @else {
                table {
                    tr {
                        th { "queue worker" } th { "lane" } th { "state" } th { "last heartbeat" }
                        th.n { "running" } th.n { "completed 1 h" } th.n { "failed 1 h" } th { "last finished" } th { "duties" }
                    }
                    @for w in &workers {
                        tr.worker data-name=(w.name) {
                            td.mono { (w.name) }
                            td { (w.lane) }
                            td { (badge(w.state(&state))) }
                            td { @match w.heartbeat { Some(at) => { span title=(when(at)) { (ago(at)) } } None => { "—" } } }
                            td.n { (w.activity.as_ref().map_or(0, |a| a.running)) }
                            td.n.completed { (w.activity.as_ref().map_or(0, |a| a.completed)) }
                            td.n { (w.activity.as_ref().map_or(0, |a| a.failed)) }
                            td { @match w.activity.as_ref().and_then(|a| a.last_finished) { Some(at) => { (ago(at)) } None => { "—" } } }
                            td { (w.duties.join(", ")) }
                        }
                    }
                }
            }
            p.note {
                "Heartbeats are the queue workers' own (Redis, this API's queue prefix), every "
                (state.config.heartbeat_interval_s) " s; a worker is missing after "
                (state.config.run_lost_after().as_secs()) " s without one. Job counts come from the runs each worker claimed. Duties: the fleet-wide leases (sweeper, dispatcher) its process holds."
            }
        }
    };
    Ok(view::page(
        "Overview",
        &chrome,
        notice_text(notice).as_deref(),
        body,
    ))
}

/// A queue worker: one lane worker of one worker process.
struct WorkerRow {
    name: String,
    /// The worker process (`<host>-<pid>-<id>`), which holds leases.
    process: String,
    lane: String,
    heartbeat: Option<DateTime<Utc>>,
    activity: Option<WorkerActivity>,
    duties: Vec<String>,
}

impl WorkerRow {
    fn new(name: &str, lane: &str) -> Self {
        // Queue worker names are `<process>-<lane>-<restarts>` (worker/src/service.rs).
        let mut parts = name.rsplitn(3, '-');
        let (_, lane_part, process) = (parts.next(), parts.next(), parts.next());
        let process = match (lane_part, process) {
            (Some(l), Some(p)) if l.parse::<Lane>().is_ok() => p.to_string(),
            _ => name.to_string(),
        };
        Self {
            name: name.to_string(),
            process,
            lane: lane.to_string(),
            heartbeat: None,
            activity: None,
            duties: Vec::new(),
        }
    }

    fn alive(&self, state: &AppState) -> bool {
        let lost = chrono::Duration::from_std(state.config.run_lost_after())
            .unwrap_or(chrono::Duration::seconds(30));
        self.heartbeat.is_some_and(|at| Utc::now() - at <= lost)
    }

    fn state(&self, state: &AppState) -> &'static str {
        match (self.heartbeat, self.alive(state)) {
            (_, true) => "alive",
            (Some(_), false) => "missing",
            (None, _) => "unknown",
        }
    }
}

/// Queue workers seen in the last hour: their heartbeats (each lane's apalis workers
/// set in Redis: worker name, last heartbeat in Unix seconds), the jobs they claimed,
/// and the leases their processes hold. A Redis failure leaves the heartbeats out.
async fn workers(state: &AppState) -> Result<(Vec<WorkerRow>, Option<String>), AdminError> {
    let since =
        (Utc::now() - chrono::Duration::seconds(WORKER_WINDOW.as_secs() as i64)).timestamp();
    let mut rows: BTreeMap<String, WorkerRow> = BTreeMap::new();
    let mut redis_error = None;
    for lane in Lane::ALL {
        let mut storage = state.queue.storage(lane).clone();
        let key = storage.get_config().workers_set();
        let seen: Result<Vec<(String, f64)>, redis::RedisError> = redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(since)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(storage.get_connection())
            .await;
        match seen {
            Ok(seen) => {
                for (name, at) in seen {
                    let row = rows
                        .entry(name.clone())
                        .or_insert_with(|| WorkerRow::new(&name, lane.as_str()));
                    row.heartbeat = DateTime::from_timestamp(at as i64, 0);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read worker heartbeats");
                redis_error = Some("Redis is unavailable: heartbeats are not shown.".to_string());
            }
        }
    }
    for a in shared::db::admin::worker_activity(&state.db, WORKER_WINDOW).await? {
        let row = rows
            .entry(a.worker.clone())
            .or_insert_with(|| WorkerRow::new(&a.worker, &a.lane));
        row.activity = Some(a);
    }
    let leases = shared::db::admin::leases(&state.db).await?;
    let now = Utc::now();
    let mut rows: Vec<WorkerRow> = rows.into_values().collect();
    for row in &mut rows {
        row.duties = leases
            .iter()
            .filter(|l| l.expires_at > now && l.holder == row.process)
            .map(|l| l.name.clone())
            .collect();
    }
    rows.sort_by_key(|w| (!w.alive(state), std::cmp::Reverse(w.heartbeat)));
    Ok((rows, redis_error))
}

// ---------------------------------------------------------------- failures

/// `GET /admin/failures`: the tenant's failed jobs of the last 24 hours by error code.
pub async fn failures(
    State(state): State<AppState>,
    admin: Admin,
    notice: Result<Query<Notice>, QueryRejection>,
) -> Result<Response, AdminError> {
    admin.require("jobs:read")?;
    let chrome = chrome(&state, &admin, Nav::Failures).await?;
    let groups =
        shared::db::admin::failures_by_code(&state.db, admin.tenant_id(), WINDOW, JOBS_PER_CODE)
            .await?;
    let body = html! {
        @if groups.is_empty() {
            div.panel { p { "No job of this tenant failed in the last 24 hours." } }
        }
        @for g in &groups {
            div.panel.failure data-code=(g.code) {
                h2 { code { (g.code) } " · " (g.jobs) " job(s) · last " span title=(when(g.last_at)) { (ago(g.last_at)) } }
                @if let Some(m) = &g.message { p { "Latest message: " (m) } }
                table {
                    tr { th { "job" } th { "" } }
                    @for id in &g.recent {
                        tr {
                            td.mono { a href=(format!("/admin/jobs/{id}")) { (id.to_string()) } }
                            td { (post_button(&format!("/admin/jobs/{id}/retry"), &chrome.csrf, "Retry", "primary")) }
                        }
                    }
                }
                @if g.jobs > g.recent.len() as i64 {
                    p.note { "The latest " (g.recent.len()) " of " (g.jobs) " are listed. Reprocess all of them with "
                        code { "POST /v1/reprocess {\"filter\": {\"status\": \"failed\", \"error_code\": \"" (g.code) "\"}}" } "." }
                }
            }
        }
        p.note { "Failed jobs of tenant " (chrome.tenant) " in the last 24 hours, most frequent code first. Retry runs a job again as it was (same options, its own lane) as a new result version." }
    };
    Ok(view::page(
        "Recent failures",
        &chrome,
        notice_text(notice).as_deref(),
        body,
    ))
}

// ---------------------------------------------------------------- batches

/// `GET /admin/batches`: the tenant's latest batches with progress and controls.
pub async fn batches(
    State(state): State<AppState>,
    admin: Admin,
    notice: Result<Query<Notice>, QueryRejection>,
) -> Result<Response, AdminError> {
    admin.require("jobs:read")?;
    let chrome = chrome(&state, &admin, Nav::Batches).await?;
    let batches =
        shared::db::batch::list_batches(&state.db, admin.tenant_id(), None, BATCHES_SHOWN).await?;
    let body = html! {
        div.panel {
            @if batches.is_empty() {
                p { "This tenant has no batch yet." }
            } @else {
                table {
                    tr {
                        th { "batch" } th { "kind" } th { "lane" } th { "status" } th { "progress" }
                        th { "created" } th.n { "per min" } th.n { "cost" } th { "failures" } th { "" }
                    }
                    @for b in &batches {
                        @let status = b.status.as_str();
                        @let short = b.id.to_string();
                        tr.batch data-id=(short) data-status=(status) {
                            td.mono title=(short) { (&short[..8]) "…" }
                            td { (b.kind.as_str()) }
                            td { (b.lane.as_str()) }
                            td { (badge(status)) }
                            td style="min-width:220px" { (progress(b)) }
                            td title=(when(b.created_at)) { (ago(b.created_at)) }
                            td.n { (format!("{:.1}", b.throughput_per_min)) }
                            td.n { (usd(b.cost_usd)) }
                            td {
                                @for (code, n) in &b.failures { code { (code) } " " (n) br; }
                            }
                            td {
                                @if status == "running" {
                                    (post_button(&format!("/admin/batches/{}/pause", b.id), &chrome.csrf, "Pause", "warn"))
                                }
                                @if status == "paused" {
                                    (post_button(&format!("/admin/batches/{}/resume", b.id), &chrome.csrf, "Resume", "primary"))
                                }
                            }
                        }
                    }
                }
            }
            p.note { "The latest " (BATCHES_SHOWN) " batches of tenant " (chrome.tenant) ", newest first. Pausing holds a batch's queued items (running ones finish); resuming queues them again." }
        }
    };
    Ok(view::page(
        "Batches",
        &chrome,
        notice_text(notice).as_deref(),
        body,
    ))
}

// ---------------------------------------------------------------- costs

/// `GET /admin/costs`: cost per tenant over the last 24 hours and 30 days.
pub async fn costs(State(state): State<AppState>, admin: Admin) -> Result<Response, AdminError> {
    let chrome = chrome(&state, &admin, Nav::Costs).await?;
    let scope = (!admin.is_operator()).then(|| admin.tenant_id());
    let rows = shared::db::admin::tenant_costs(&state.db, scope).await?;
    let body = html! {
        div.panel #costs {
            table {
                tr {
                    th { "tenant" } th.n { "results 24 h" } th.n { "cost 24 h" } th.n { "results 30 d" }
                    th.n { "audio 30 d" } th.n { "cost 30 d" } th.n { "per audio minute" }
                }
                @for r in &rows {
                    tr.cost data-tenant=(r.tenant) {
                        td { (r.tenant) }
                        td.n { (r.results_24h) }
                        td.n.cost-day { (usd(r.cost_24h)) }
                        td.n { (r.results_30d) }
                        td.n { (format!("{:.1} min", r.audio_s_30d / 60.0)) }
                        td.n.cost-month { (usd(r.cost_30d)) }
                        td.n { @if r.audio_s_30d > 0.0 { (usd(r.cost_30d / (r.audio_s_30d / 60.0))) } @else { "—" } }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="7" { "No result was stored in the last 30 days." } }
                }
            }
            p.note {
                "Cost is what each stored result version's stages recorded (" code { "usage.*.cost_usd" }
                "): provider fees at the configured prices; the local engine costs nothing. "
                @if admin.is_operator() { "Every tenant (operator key)." } @else { "Tenant " (chrome.tenant) " only; an operator key sees every tenant." }
            }
        }
    };
    Ok(view::page("Cost per tenant", &chrome, None, body))
}

// ---------------------------------------------------------------- a job

/// `GET /admin/jobs/{id}`: one of the tenant's jobs, its versions, and its actions.
pub async fn job(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    notice: Result<Query<Notice>, QueryRejection>,
) -> Result<Response, AdminError> {
    admin.require("jobs:read")?;
    let chrome = chrome(&state, &admin, Nav::Job).await?;
    let id = Uuid::parse_str(&id).map_err(|_| AdminError::NotFound("job"))?;
    let tenant = admin.tenant_id();
    let job = shared::db::get_job(&state.db, tenant, id, None)
        .await?
        .ok_or(AdminError::NotFound("job"))?;
    let ops = shared::db::admin::job_ops(&state.db, tenant, id)
        .await?
        .ok_or(AdminError::NotFound("job"))?;
    let versions = shared::db::batch::job_versions(&state.db, tenant, id)
        .await?
        .unwrap_or_default();
    let status = job.status.as_str();
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let text: Option<String> = job
        .result
        .as_ref()
        .map(|r| r.transcript.text.chars().take(4000).collect());
    let models: Vec<String> = state.config.model_dirs().into_keys().collect();
    let body = html! {
        div.grid {
            div.panel #job data-status=(status) {
                h2 { code { (job.id.to_string()) } " " (badge(status)) }
                dl {
                    dt { "tenant" } dd { (ops.tenant) }
                    dt { "lane" } dd { (job.lane.as_str()) }
                    dt { "created" } dd { (when(job.created_at)) }
                    dt { "started" } dd { @if let Some(t) = job.started_at { (when(t)) } @else { "—" } }
                    dt { "finished" } dd { @if let Some(t) = job.finished_at { (when(t)) } @else { "—" } }
                    dt { "attempts" } dd { (job.attempts) }
                    dt { "result version" } dd #version {
                        (job.version.map_or("none".to_string(), |v| v.to_string()))
                        " (requested " span #requested-version { (job.requested_version) } ")"
                    }
                    @if let Some(b) = job.batch_id { dt { "batch" } dd.mono { (b.to_string()) } }
                    @if let Some(c) = &job.custom_id { dt { "custom id" } dd { (c) } }
                    dt { "worker" } dd.mono { (ops.worker.as_deref().unwrap_or("—")) }
                    @if let Some(e) = &job.error {
                        dt { "error" } dd #error-code { code { (e.code) } }
                        dt { "message" } dd { (e.message) }
                    }
                }
            }
            div.panel #actions {
                h2 { "Actions" }
                @if job.status == JobStatus::Failed {
                    p { (post_button(&format!("/admin/jobs/{id}/retry"), &chrome.csrf, "Retry", "primary"))
                        " runs the job again as it was, in its own lane." }
                }
                @if job.status.is_final() {
                    form method="post" action=(format!("/admin/jobs/{id}/reprocess")) {
                        (view::csrf_input(&chrome.csrf))
                        p {
                            "Reprocess for a new result version, in lane "
                            select name="lane" { option value="bulk" selected { "bulk" } option value="interactive" { "interactive" } }
                            " with model "
                            select name="model" {
                                option value="" selected { "(unchanged)" }
                                @for m in &models { option value=(m) { (m) } }
                            }
                            " "
                            button type="submit" { "Reprocess" }
                        }
                    }
                } @else {
                    p { "The job is " (status) "; it can be retried or reprocessed once it has finished." }
                }
            }
        }
        @if !versions.is_empty() {
            div.panel {
                h2 { "Result versions" }
                table {
                    tr { th.n { "version" } th { "model" } th { "stored" } th.n { "quality" } th { "summary" } }
                    @for v in &versions {
                        tr {
                            td.n { (v.version) } td { (v.model) } td { (when(v.created_at)) }
                            td.n { (v.quality.map_or("—".to_string(), |q| q.to_string())) }
                            td { (v.summary_kind.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
        @if let Some(t) = &text {
            div.panel { h2 { "Transcript (latest version)" } pre { (t) } }
        }
        div.grid {
            div.panel { h2 { "Options" } pre { (pretty(&ops.options)) } }
            @if let Some(t) = &ops.timings { div.panel { h2 { "Stage timings of the last run (ms)" } pre { (pretty(t)) } } }
        }
    };
    Ok(view::page(
        "Job",
        &chrome,
        notice_text(notice).as_deref(),
        body,
    ))
}
