//! The OpenAPI 3.1 document of the JSON API, generated from the code: each handler's
//! `#[utoipa::path]` (its parameters, bodies and answers) and the `ToSchema` types it
//! reads and writes. `app::api` registers every route through utoipa-axum's
//! `OpenApiRouter`, so a route cannot exist without its path item; [`finish`] adds what
//! every `/v1` operation shares (the bearer key, and the errors of authentication, rate
//! limits and load shedding). Served at `GET /openapi.json`, with Swagger UI at
//! `GET /docs` (files embedded in the binary, no CDN); committed as `docs/openapi.json`.
//! `/openapi.json`, `/docs` and `/admin` are not part of the JSON API and are left out.

use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::openai::OpenAiErrorBody;

/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";
/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// The security scheme of voxq's API keys.
const BEARER: &str = "bearer";
/// Routes that answer errors in OpenAI's shape.
const OPENAI_PATHS: [&str; 2] = ["/v1/audio/transcriptions", "/v1/models"];

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "voxq",
        description = "Self-hosted voice-message transcription, scoring and summaries. \
            Every `/v1` route takes a voxq API key as a bearer token \
            (`Authorization: Bearer vxq_…`, made by `voxq-api keys create`); \
            errors answer `{\"error\": {\"code\", \"message\"}}` with a stable kebab-case \
            `code`, except on the OpenAI-compatible routes (`/v1/audio/transcriptions`, \
            `/v1/models`), which use OpenAI's error shape.",
        license(name = "MIT", identifier = "MIT"),
    ),
    tags(
        (name = "jobs", description = "One recording: submit, read, download, delete."),
        (name = "batches", description = "Many recordings at once, with progress, results and controls."),
        (name = "reprocess", description = "New result versions of finished jobs (admin keys)."),
        (name = "webhooks", description = "Signed event deliveries (Standard Webhooks)."),
        (name = "openai", description = "OpenAI-compatible transcription: change the base URL and key."),
        (name = "health", description = "Liveness and readiness, without a key."),
    ),
    components(schemas(ErrorBody, OpenAiErrorBody))
)]
pub struct ApiDoc;

/// A page of a keyset listing, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A whole (short) list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// The document of the JSON API: the routes' path items (from `app::api`), completed.
pub fn document() -> OpenApi {
    crate::app::api_document()
}

/// The document as committed in `docs/openapi.json`: pretty JSON and a final newline.
pub fn document_json() -> String {
    let mut text = document()
        .to_pretty_json()
        .expect("an OpenAPI document always serializes");
    text.push('\n');
    text
}

/// Adds the bearer scheme, and on every `/v1` operation the key requirement and the
/// answers any of them can give: 401 (no or bad key), 403 (missing scope), 429 (rate
/// limits), 503 (load shed, or a dependency down); each in the route's error shape.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("vxq_ followed by 64 hex digits")
                .description(Some(
                    "A voxq API key (`voxq-api keys create`), with the scopes the route \
                     names: jobs:read, jobs:write, admin or operator.",
                ))
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let schema = if OPENAI_PATHS.contains(&path.as_str()) {
            "OpenAiErrorBody"
        } else {
            "ErrorBody"
        };
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            finish_operation(op, schema);
        }
    }
}

fn finish_operation(op: &mut Operation, schema: &str) {
    op.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
    // An optional body (`request_body(content = Option<T>)`) is an absent body, not a
    // JSON `null`: keep the `T` and leave the body not required.
    if let Some(body) = op.request_body.as_mut() {
        for content in body.content.values_mut() {
            if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema {
                let is_null = |s: &RefOr<Schema>| {
                    matches!(s, RefOr::T(Schema::Object(o))
                        if o.schema_type == SchemaType::Type(Type::Null))
                };
                if let [a, b] = one.items.as_slice() {
                    let kept = match (is_null(a), is_null(b)) {
                        (true, false) => Some(b.clone()),
                        (false, true) => Some(a.clone()),
                        _ => None,
                    };
                    if kept.is_some() {
                        content.schema = kept;
                    }
                }
            }
        }
    }
    let common = [
        (
            "401",
            "No key, or not a live voxq key (`unauthorized`).",
            None,
        ),
        (
            "403",
            "The key lacks the scope this route needs (`missing-scope`).",
            None,
        ),
        (
            "429",
            "Over the key's rate limit (`rate-limited`), or too many failed \
             authentications from this address (`auth-rate-limited`).",
            Some("Retry-After"),
        ),
        (
            "503",
            "The server sheds load (`overloaded`) or a dependency is down \
             (`unavailable`); retry after the given seconds.",
            Some("Retry-After"),
        ),
    ];
    for (status, description, header) in common {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description, schema, header));
    }
}

fn error_response(description: &str, schema: &str, header: Option<&str>) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build(),
    );
    if let Some(name) = header {
        response = response.header(
            name,
            HeaderBuilder::new()
                .schema(<u64 as utoipa::PartialSchema>::schema())
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    RefOr::T(response.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
    }

    /// The committed document is the one the code generates. `UPDATE_OPENAPI=1` writes it.
    #[test]
    fn committed_document_matches_the_code() {
        let generated = document_json();
        let path = committed_path();
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the document the code generates; regenerate it \
             with `UPDATE_OPENAPI=1 cargo test -p voxq-api openapi` (or \
             `voxq-api openapi > docs/openapi.json`) and commit it"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for p in [
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/batches",
            "/v1/audio/transcriptions",
            "/v1/models",
            "/v1/webhooks/{id}/deliveries",
            "/healthz",
            "/readyz",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        for p in [DOCUMENT_PATH, DOCS_PATH, "/admin"] {
            assert!(!paths.contains(&p), "{p} is not part of the JSON API");
        }
    }

    /// Every `/v1` operation takes the bearer key and documents its errors in the
    /// route's shape; the health routes take no key.
    #[test]
    fn keys_and_errors_are_documented_on_every_v1_operation() {
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                let security = &op["security"];
                if !path.starts_with("/v1/") {
                    assert!(security.is_null(), "{method} {path} takes no key");
                    continue;
                }
                assert_eq!(
                    security[0]["bearer"],
                    serde_json::json!([]),
                    "{method} {path}"
                );
                let shape = if OPENAI_PATHS.contains(&path.as_str()) {
                    "#/components/schemas/OpenAiErrorBody"
                } else {
                    "#/components/schemas/ErrorBody"
                };
                let responses = op["responses"].as_object().unwrap();
                for status in ["401", "403", "429", "503"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &response["content"]["application/json"]["schema"];
                        assert_eq!(schema["$ref"], shape, "{method} {path} {status}");
                    }
                }
                assert!(op["operationId"].is_string(), "{method} {path}");
            }
        }
        assert!(operations >= 30, "{operations} operations");
    }

    /// Every `$ref` names a schema the document holds.
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &serde_json::Value, refs: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        refs.push(r.clone());
                    }
                    map.values().for_each(|v| walk(v, refs));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(refs.len() > 50, "{}", refs.len());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
    }

    /// The forms and the batch's query parameters document every option field that
    /// `RawOptions::set_text` reads.
    #[test]
    fn every_option_field_is_documented() {
        let doc: serde_json::Value = serde_json::to_value(document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for form in ["JobForm", "BatchForm", "TranscriptionForm"] {
            let properties = schemas[form]["properties"].as_object().unwrap();
            assert!(properties.contains_key("file"), "{form}");
            for field in crate::options::FIELDS {
                if form == "TranscriptionForm" && field == "lane" {
                    continue; // always interactive
                }
                assert!(properties.contains_key(field), "{form} lacks {field}");
            }
        }
        let params: Vec<&str> = doc["paths"]["/v1/batches"]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, crate::options::FIELDS);
    }
}
