//! The small commands: `batches`, `pause`/`resume`/`cancel`, `reprocess` and `job`.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::api::{json_of, Api, Repeat};
use crate::watch::Batch;
use crate::ReprocessArgs;

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
    #[serde(default)]
    next_cursor: Option<String>,
}

pub(crate) async fn batches(
    api: &Api,
    limit: u32,
    cursor: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor.to_string()));
    }
    if json {
        let page: Value = api.get_json("/v1/batches", &query).await?;
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    let page: Page<Batch> = api.get_json("/v1/batches", &query).await?;
    for line in batch_table(&page.data) {
        println!("{line}");
    }
    if let Some(next) = page.next_cursor {
        eprintln!("voxq: more: voxq batches --cursor {next}");
    }
    Ok(())
}

fn batch_table(batches: &[Batch]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<36}  {:<9}  {:<9}  {:>15}  {:>7}  CREATED",
        "ID", "KIND", "STATUS", "FINISHED/TOTAL", "FAILED"
    )];
    lines.extend(batches.iter().map(|b| {
        let progress = format!("{}/{}", b.finished(), b.total);
        format!(
            "{:<36}  {:<9}  {:<9}  {:>15}  {:>7}  {}",
            b.id,
            b.kind,
            b.status,
            progress,
            b.counts.failed,
            b.created_at.as_deref().unwrap_or("-")
        )
    }));
    lines
}

/// `pause`, `resume` or `cancel`: each leaves the batch in the same state however often
/// it is sent, so it is retried like a read.
pub(crate) async fn batch_action(api: &Api, id: Uuid, action: &str) -> anyhow::Result<()> {
    let path = format!("/v1/batches/{id}/{action}");
    let response = api
        .send(Repeat::Safe, || api.request(Method::POST, &path))
        .await?;
    let batch: Batch = json_of(response).await?;
    println!("{} {}", batch.id, batch.status);
    Ok(())
}

/// The `filter` object of `POST /v1/reprocess`.
fn filter(args: &ReprocessArgs) -> Value {
    let mut filter = Map::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            filter.insert(name.to_string(), Value::String(value));
        }
    };
    put("batch", args.filter_batch.map(|b| b.to_string()));
    put("status", args.filter_status.clone());
    put("created_after", args.created_after.clone());
    put("created_before", args.created_before.clone());
    put("error_code", args.error_code.clone());
    put("flag", args.flag.clone());
    put("model", args.model_filter.clone());
    put("tenant", args.tenant.clone());
    Value::Object(filter)
}

fn reprocess_body(args: &ReprocessArgs) -> Value {
    let mut body = json!({ "options": args.options.json() });
    if let Some(lane) = &args.lane {
        body["lane"] = json!(lane);
    }
    if args.job.is_none() {
        body["filter"] = filter(args);
        if args.dry_run {
            body["dry_run"] = json!(true);
        }
    }
    body
}

/// Prints the number of matching jobs (dry run) or the new batch's id.
pub(crate) async fn reprocess(api: &Api, args: ReprocessArgs) -> anyhow::Result<()> {
    let body = reprocess_body(&args);
    // Not idempotent: a repeat would reprocess again, so only refusals are retried.
    let path = match args.job {
        Some(job) => format!("/v1/jobs/{job}/reprocess"),
        None => "/v1/reprocess".to_string(),
    };
    let answer: Value = api
        .post_json(&path, &body, None, Repeat::RefusalsOnly)
        .await?;
    if args.dry_run {
        let matched = answer["matched"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("the dry run's answer has no 'matched' count"))?;
        println!("{matched}");
    } else {
        let batch: Batch = serde_json::from_value(answer)?;
        println!("{}", batch.id);
    }
    Ok(())
}

pub(crate) async fn job(
    api: &Api,
    id: Uuid,
    version: Option<u32>,
    versions: bool,
) -> anyhow::Result<()> {
    let answer: Value = if versions {
        api.get_json(&format!("/v1/jobs/{id}/versions"), &[])
            .await?
    } else {
        let query: Vec<(&str, String)> = version
            .map(|v| vec![("version", v.to_string())])
            .unwrap_or_default();
        api.get_json(&format!("/v1/jobs/{id}"), &query).await?
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn reprocess_args(argv: &[&str]) -> ReprocessArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ReprocessArgs,
        }
        let argv = std::iter::once("reprocess").chain(argv.iter().copied());
        Wrapper::try_parse_from(argv).expect("valid").args
    }

    #[test]
    fn a_filtered_reprocess_sends_the_contract_body() {
        let args = reprocess_args(&[
            "--filter-status",
            "failed",
            "--error-code",
            "corrupt-audio",
            "--model-filter",
            "tiny.en",
            "--created-after",
            "2025-01-01T00:00:00Z",
            "--model",
            "large-v3",
            "--lane",
            "bulk",
            "--dry-run",
        ]);
        assert_eq!(
            reprocess_body(&args),
            json!({
                "filter": {"status": "failed", "error_code": "corrupt-audio", "model": "tiny.en",
                           "created_after": "2025-01-01T00:00:00Z"},
                "options": {"model": "large-v3"},
                "lane": "bulk",
                "dry_run": true,
            })
        );
    }

    #[test]
    fn a_job_reprocess_sends_only_options() {
        let args = reprocess_args(&[
            "--job",
            "0b0f7c4e-5b0e-4c56-9d4e-2a0a7c1d2e3f",
            "--rubric",
            "support",
        ]);
        assert_eq!(
            reprocess_body(&args),
            json!({"options": {"rubric": "support"}})
        );
    }

    #[test]
    fn the_table_has_a_row_per_batch() {
        let batch: Batch = serde_json::from_value(json!({
            "id": "0b0f7c4e-5b0e-4c56-9d4e-2a0a7c1d2e3f", "kind": "reprocess", "status": "running",
            "created_at": "2025-01-01T00:00:00Z", "total": 10,
            "counts": {"completed": 6, "failed": 1, "cancelled": 0}
        }))
        .unwrap();
        let lines = batch_table(&[batch]);
        assert_eq!(lines.len(), 2);
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "0b0f7c4e-5b0e-4c56-9d4e-2a0a7c1d2e3f",
                "reprocess",
                "running",
                "7/10",
                "1",
                "2025-01-01T00:00:00Z"
            ]
        );
    }
}
