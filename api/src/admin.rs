//! The admin dashboard at `/admin`: server-rendered HTML pages (no scripts, no external
//! assets) for an `admin`- or `operator`-scoped key, signed in through a login form
//! (a session cookie) or sent as `Authorization: Bearer`.
//!
//! - [`session`]: the login form, sessions, the [`session::Admin`] extractor and the
//!   CSRF tokens every form carries ([`session::Posted`] checks them before a handler
//!   runs).
//! - [`page`]: the pages: overview (lanes, jobs per minute, workers), failures by error
//!   code, batches, cost per tenant, a job.
//! - [`action`]: retry, reprocess, pause and resume, through the same code as the API's
//!   routes.
//! - [`view`]: the layout and the HTML pieces the pages share (templates are `maud`:
//!   checked at compile time, every interpolated value escaped).
//!
//! Data scope: a tenant's jobs, failures and batches are the key's tenant's; the lanes,
//! throughput and workers are the fleet's; cost is the key's tenant's, or every
//! tenant's for an `operator` key.

mod action;
mod page;
mod session;
mod view;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

/// Largest form body: a key, a token and a few choices.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The dashboard's routes, all under `/admin`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page::overview))
        .route("/admin/failures", get(page::failures))
        .route("/admin/batches", get(page::batches))
        .route("/admin/costs", get(page::costs))
        .route("/admin/jobs/{id}", get(page::job))
        .route(
            "/admin/login",
            get(session::login_form).post(session::login),
        )
        .route("/admin/logout", post(session::logout))
        .route("/admin/jobs/{id}/retry", post(action::retry))
        .route("/admin/jobs/{id}/reprocess", post(action::reprocess))
        .route("/admin/batches/{id}/pause", post(action::pause))
        .route("/admin/batches/{id}/resume", post(action::resume))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(protect))
}

/// Headers of every admin answer: nothing may be framed, cached, or loaded from
/// elsewhere; no script runs (the pages have none).
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Why an admin request was refused, answered as an HTML page (or, for a browser that
/// is not signed in, a redirect to the login form).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("sign in first")]
    LoginRequired,
    #[error("this key has neither the 'admin' nor the 'operator' scope")]
    NotAdmin,
    #[error("the form's CSRF token is missing or invalid; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    BadForm(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// What the API's own code answered (authentication, rate limits, reprocessing).
    #[error("{0}")]
    Api(#[from] ApiError),
}

impl From<shared::db::DbError> for AdminError {
    fn from(e: shared::db::DbError) -> Self {
        Self::Api(e.into())
    }
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::LoginRequired => StatusCode::UNAUTHORIZED,
            Self::NotAdmin | Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadForm(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Api(e) => e.status_and_code().0,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::LoginRequired => "Sign in first",
            Self::NotAdmin => "Not an admin key",
            Self::Csrf => "Request refused: invalid CSRF token",
            Self::BadForm(_) => "Invalid form",
            Self::NotFound(_) => "Not found",
            Self::Conflict(_) => "Not possible now",
            Self::Api(_) => "Request refused",
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if matches!(self, Self::LoginRequired) {
            return Redirect::to("/admin/login").into_response();
        }
        let status = self.status();
        let body = view::error_page(status, self.title(), &self.to_string());
        let mut response = (status, body).into_response();
        if let Self::Api(
            ApiError::AuthRateLimited { retry_after_s } | ApiError::RateLimited { retry_after_s },
        ) = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        response
    }
}
