//! HTML of the dashboard: the layout, the login and error pages, and the pieces pages
//! share (tables, progress bars, the jobs-per-minute chart, POST buttons). `maud`
//! escapes every interpolated value; the only unescaped text is the static style sheet.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use shared::db::admin::Minute;
use shared::db::batch::BatchView;

/// The style sheet, inline (no external assets).
const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2937;background:#f3f4f6}
header{background:#111827;color:#f9fafb;padding:10px 24px;display:flex;align-items:center;gap:24px;flex-wrap:wrap}
header .brand{font-weight:700;font-size:16px;letter-spacing:.02em}
header nav a{color:#d1d5db;text-decoration:none;margin-right:16px;padding:4px 0}
header nav a.on{color:#fff;border-bottom:2px solid #60a5fa}
header .who{margin-left:auto;color:#9ca3af;font-size:13px;display:flex;gap:12px;align-items:center}
header .who b{color:#f9fafb}
main{padding:20px 24px;max-width:1280px}
h1{font-size:20px;margin:0 0 16px}
h2{font-size:15px;margin:0 0 10px;color:#374151}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:16px}
.grid.split{grid-template-columns:minmax(0,3fr) minmax(0,2fr)}
.panel{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:14px 16px;margin-bottom:16px;overflow-x:auto}
.note{color:#6b7280;font-size:12px;margin:6px 0 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #f0f1f3;vertical-align:top}
th{font-size:12px;color:#6b7280;font-weight:600;text-transform:uppercase;letter-spacing:.03em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
a{color:#2563eb}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e5e7eb;color:#374151}
.b-completed,.b-alive,.b-running{background:#dcfce7;color:#166534}
.b-failed,.b-missing{background:#fee2e2;color:#991b1b}
.b-queued,.b-listing{background:#e0e7ff;color:#3730a3}
.b-processing{background:#dbeafe;color:#1e40af}
.b-paused{background:#fef3c7;color:#92400e}
.b-cancelled{background:#e5e7eb;color:#4b5563}
.bar{display:flex;height:14px;border-radius:7px;overflow:hidden;background:#e5e7eb;min-width:160px}
.bar span{display:block;height:100%}
.s-completed{background:#22c55e}.s-failed{background:#ef4444}.s-cancelled{background:#9ca3af}
.s-processing{background:#3b82f6}.s-paused{background:#f59e0b}
.legend{font-size:12px;color:#6b7280;margin-top:3px}
form.inline{display:inline;margin:0}
button{font:inherit;font-size:12.5px;padding:3px 10px;border-radius:6px;border:1px solid #d1d5db;background:#fff;cursor:pointer}
button.primary{background:#2563eb;border-color:#2563eb;color:#fff}
button.warn{background:#f59e0b;border-color:#f59e0b;color:#fff}
button.link{border:none;background:none;color:#d1d5db;padding:0;text-decoration:underline}
.notice{background:#ecfdf5;border:1px solid #a7f3d0;color:#065f46;padding:8px 12px;border-radius:6px;margin-bottom:16px}
.error{background:#fef2f2;border:1px solid #fecaca;color:#991b1b;padding:8px 12px;border-radius:6px;margin-bottom:12px}
.big{font-size:24px;font-weight:700;font-variant-numeric:tabular-nums}
.stats{display:flex;gap:28px;flex-wrap:wrap}
.stats div small{display:block;color:#6b7280;font-size:12px}
svg .ok{fill:#22c55e}svg .ko{fill:#ef4444}svg text{font-size:10px;fill:#6b7280}
.login{max-width:460px;margin:80px auto}
.login input[type=password]{width:100%;padding:8px;font:inherit;border:1px solid #d1d5db;border-radius:6px;margin:6px 0 12px}
dl{display:grid;grid-template-columns:160px 1fr;gap:4px 12px;margin:0}
dt{color:#6b7280}dd{margin:0}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:8px;border-radius:6px;white-space:pre-wrap;word-break:break-word;max-height:320px;overflow:auto}
select{font:inherit;font-size:12.5px;padding:2px 4px}
"#;

/// Which page of the navigation is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Failures,
    Batches,
    Costs,
    Job,
}

/// What the header of a signed-in page shows.
pub(crate) struct Chrome {
    pub tenant: String,
    pub scopes: String,
    pub csrf: String,
    pub nav: Nav,
}

pub(crate) fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · voxq admin" }
            style { (PreEscaped(CSS)) }
        }
    }
}

/// A signed-in page: header with navigation and logout, an optional notice, the body.
pub(crate) fn page(title: &str, chrome: &Chrome, notice: Option<&str>, body: Markup) -> Response {
    let link = |nav: Nav, href: &str, label: &str| {
        html! { a.on[chrome.nav == nav] href=(href) { (label) } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "voxq admin" }
                    nav {
                        (link(Nav::Overview, "/admin", "Overview"))
                        (link(Nav::Failures, "/admin/failures", "Failures"))
                        (link(Nav::Batches, "/admin/batches", "Batches"))
                        (link(Nav::Costs, "/admin/costs", "Costs"))
                    }
                    div.who {
                        span { "tenant " b { (chrome.tenant) } " · " (chrome.scopes) }
                        form.inline method="post" action="/admin/logout" {
                            (csrf_input(&chrome.csrf))
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(n) = notice { div.notice role="status" { (n) } }
                    (body)
                }
            }
        }
    };
    html(StatusCode::OK, markup)
}

pub(crate) fn csrf_input(token: &str) -> Markup {
    html! { input type="hidden" name="_csrf" value=(token); }
}

/// A one-button POST form carrying the CSRF token.
pub(crate) fn post_button(action: &str, csrf: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_input(csrf))
            button class=(class) type="submit" { (label) }
        }
    }
}

pub(crate) fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge b-{status}")) { (status) } }
}

pub(crate) fn login_page(token: &str, error: Option<&str>) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head("Sign in"))
                body {
                    div.login {
                        div.panel {
                            h1 { "voxq admin" }
                            @if let Some(e) = error { div.error role="alert" { (e) } }
                            form method="post" action="/admin/login" {
                                (csrf_input(token))
                                label for="key" { "API key with the " code { "admin" } " scope" }
                                input id="key" type="password" name="key" autocomplete="off"
                                    placeholder="vxq_…" required autofocus;
                                button.primary type="submit" { "Sign in" }
                            }
                            p.note {
                                "Create one with " code { "voxq-api keys create --tenant NAME --scopes jobs:read,jobs:write,admin" }
                                ". The key is checked once; the browser keeps only a session cookie."
                            }
                        }
                    }
                }
            }
        }
        .into_string(),
    )
}

pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body {
                    div.login {
                        div.panel {
                            h1 { (title) }
                            div.error role="alert" { (message) }
                            p.note { "HTTP " (status.as_u16()) ". " a href="/admin" { "Back to the dashboard" } }
                        }
                    }
                }
            }
        }
        .into_string(),
    )
}

/// "12 s ago", "3 min ago", "2 h ago", "4 d ago".
pub(crate) fn ago(at: DateTime<Utc>) -> String {
    let s = (Utc::now() - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

pub(crate) fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn usd(v: f64) -> String {
    format!("${v:.4}")
}

/// A batch's progress: finished items by outcome, then running and held ones, over the
/// total, with the percentage finished.
pub(crate) fn progress(b: &BatchView) -> Markup {
    let n = |s: &str| b.counts.get(s).copied().unwrap_or(0);
    let total = b.total.max(1) as f64;
    let finished = n("completed") + n("failed") + n("cancelled");
    let parts = ["completed", "failed", "cancelled", "processing", "paused"];
    html! {
        div.bar role="progressbar" aria-valuemin="0" aria-valuemax=(b.total)
            aria-valuenow=(finished) title=(format!("{finished} of {} finished", b.total)) {
            @for s in parts {
                @if n(s) > 0 {
                    span class=(format!("s-{s}")) style=(format!("width:{:.2}%", n(s) as f64 / total * 100.0)) {}
                }
            }
        }
        div.legend {
            (format!("{:.0}% · {finished}/{} finished", finished as f64 / total * 100.0, b.total))
            @for s in ["completed", "failed", "cancelled", "processing", "paused", "queued"] {
                @if n(s) > 0 { " · " (n(s)) " " (s) }
            }
        }
    }
}

/// Jobs per minute as an inline SVG bar chart: completed (green) with failed (red)
/// stacked on top, one bar per minute, oldest left; each bar's tooltip gives its counts.
pub(crate) fn minute_chart(minutes: &[Minute]) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 120.0;
    const TOP: f64 = 12.0;
    let peak = minutes
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let slot = W / minutes.len().max(1) as f64;
    let scale = |v: i64| v as f64 / peak * (H - TOP);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox=(format!("0 0 {W} {}", H + 16.0))
            role="img" aria-label="Jobs finished per minute over the last hour" {
            line x1="0" y1=(H) x2=(W) y2=(H) stroke="#d1d5db" {}
            text x="0" y="9" { "peak " (peak as i64) "/min" }
            @for (i, m) in minutes.iter().enumerate() {
                @let x = i as f64 * slot + 1.0;
                @let ok = scale(m.completed);
                @let ko = scale(m.failed);
                @let tip = format!("{}: {} completed, {} failed", m.minute.format("%H:%M UTC"), m.completed, m.failed);
                g {
                    title { (tip) }
                    @if m.completed > 0 {
                        rect.ok x=(format!("{x:.1}")) y=(format!("{:.1}", H - ok)) width=(format!("{:.1}", slot - 2.0)) height=(format!("{ok:.1}")) {}
                    }
                    @if m.failed > 0 {
                        rect.ko x=(format!("{x:.1}")) y=(format!("{:.1}", H - ok - ko)) width=(format!("{:.1}", slot - 2.0)) height=(format!("{ko:.1}")) {}
                    }
                    @if m.completed + m.failed == 0 {
                        rect x=(format!("{x:.1}")) y=(format!("{:.1}", H - 1.0)) width=(format!("{:.1}", slot - 2.0)) height="1" fill="#e5e7eb" {}
                    }
                }
            }
            @if let (Some(first), Some(last)) = (minutes.first(), minutes.last()) {
                text x="0" y=(H + 13.0) { (first.minute.format("%H:%M").to_string()) }
                text x=(W) y=(H + 13.0) text-anchor="end" { (last.minute.format("%H:%M UTC").to_string()) }
            }
        }
    }
}
