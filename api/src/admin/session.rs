//! Signing in to the dashboard, sessions, and CSRF tokens.
//!
//! - The login form takes an API key and checks it exactly as a bearer key is checked
//!   (the [`Caller`] extractor: the failed-authentication limit per client address,
//!   the bounded key lookups, the per-key rate limit). A key with the `admin` or
//!   `operator` scope gets a session: a random 256-bit token in a cookie
//!   (`HttpOnly; SameSite=Strict; Secure; Path=/admin`), stored server-side as its
//!   SHA-256 with an expiry (`admin_sessions`), never the key.
//! - Every form carries a CSRF token, the HMAC-SHA256 of a fixed label under the
//!   credential (the session token, or the bearer key): only a page the credential's
//!   holder loaded knows it. [`Posted`] checks it before any handler runs, and refuses
//!   with 403. The login form's token is tied the same way to a random nonce cookie set
//!   with the form.
//! - `Secure` is always set: browsers keep secure cookies on `http://localhost` and
//!   `http://127.0.0.1` (Chromium does), elsewhere the dashboard must be served over
//!   HTTPS (a bearer key works over either).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::db::ApiKeyRecord;
use uuid::Uuid;

use super::{view, AdminError};
use crate::app::AppState;
use crate::auth::{client_addr, is_key_shaped, Caller};
use crate::error::ApiError;

/// The session cookie.
const SESSION_COOKIE: &str = "voxq_admin";
/// The nonce cookie of the login form's CSRF token.
const LOGIN_COOKIE: &str = "voxq_admin_login";
/// How long a session lasts (it is not extended by use).
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
const LOGIN_NONCE_TTL_S: u64 = 3600;
/// What the CSRF HMACs sign: one label per kind of credential.
const CSRF_LABEL: &[u8] = b"voxq-admin-csrf";
const LOGIN_LABEL: &[u8] = b"voxq-admin-login";

type HmacSha256 = Hmac<Sha256>;

/// An admin request's caller: a live key with the `admin` or `operator` scope, by
/// session cookie or bearer key.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub caller: Caller,
    /// Signs this credential's CSRF tokens: the session token or the bearer key.
    csrf_key: String,
    pub by_session: bool,
}

impl Admin {
    pub fn key(&self) -> &ApiKeyRecord {
        &self.caller.0
    }

    /// The scope the API itself asks for the same data or action (`jobs:read` to see a
    /// tenant's jobs and batches, `jobs:write` to pause or resume a batch): the
    /// dashboard never lets a key do what the API would refuse it.
    pub fn require(&self, scope: &'static str) -> Result<(), AdminError> {
        self.caller.require(scope).map_err(AdminError::from)
    }

    pub fn tenant_id(&self) -> Uuid {
        self.caller.tenant_id()
    }

    /// Whether the key acts across tenants.
    pub fn is_operator(&self) -> bool {
        self.key().has_scope("operator")
    }

    /// The token every form of this credential's pages carries.
    pub fn csrf_token(&self) -> String {
        sign(self.csrf_key.as_bytes(), CSRF_LABEL)
    }

    fn check_csrf(&self, given: &str) -> Result<(), AdminError> {
        verify(self.csrf_key.as_bytes(), CSRF_LABEL, given)
            .then_some(())
            .ok_or(AdminError::Csrf)
    }
}

fn mac(key: &[u8], label: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(label);
    Some(mac)
}

fn sign(key: &[u8], label: &[u8]) -> String {
    mac(key, label)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Compares in constant time.
fn verify(key: &[u8], label: &[u8], given: &str) -> bool {
    let (Some(mac), Ok(given)) = (mac(key, label), hex::decode(given.trim())) else {
        return false;
    };
    mac.verify_slice(&given).is_ok()
}

fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

/// 64 lowercase hex digits, as [`random_token`] makes them.
fn is_token_shaped(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn set_cookie(name: &str, value: &str, max_age_s: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Secure; Path=/admin; Max-Age={max_age_s}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn session_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn is_admin(key: &ApiKeyRecord) -> bool {
    key.has_scope("admin") || key.has_scope("operator")
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AdminError> {
        if let Some(bearer) = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|v| v.trim().to_string())
        {
            let caller = Caller::from_request_parts(parts, state).await?;
            if !is_admin(&caller.0) {
                return Err(AdminError::NotAdmin);
            }
            return Ok(Self {
                caller,
                csrf_key: bearer,
                by_session: false,
            });
        }
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).filter(|t| is_token_shaped(t))
        else {
            return Err(AdminError::LoginRequired);
        };
        // A session cookie is a credential like a key: the same failure budget per
        // client address and the same bound on concurrent lookups apply, so random
        // cookies cannot turn into unlimited database queries.
        let client = client_addr(parts);
        state.auth.allowed(client)?;
        let found = {
            let _permit = state.auth.lookup_permit().await?;
            shared::db::admin::find_session(&state.db, &session_hash(token)).await?
        };
        let Some(key) = found else {
            state.auth.failed(client)?;
            return Err(AdminError::LoginRequired);
        };
        if !is_admin(&key) {
            return Err(AdminError::NotAdmin);
        }
        state
            .limiter
            .check(key.id)
            .map_err(|retry_after_s| ApiError::RateLimited { retry_after_s })?;
        Ok(Self {
            caller: Caller(key),
            csrf_key: token.to_string(),
            by_session: true,
        })
    }
}

/// A form that carries its CSRF token as `_csrf`.
pub(crate) trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A POSTed admin form, from a signed-in admin, whose CSRF token was checked: a handler
/// that takes it cannot run for a forged request.
pub(crate) struct Posted<T> {
    pub admin: Admin,
    pub form: T,
}

impl<T> FromRequest<AppState> for Posted<T>
where
    T: DeserializeOwned + CsrfForm + Send,
{
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, AdminError> {
        let (mut parts, body) = request.into_parts();
        let admin = Admin::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        // A body that is not a form cannot carry the token: refused like a wrong one.
        let Form(form) = Form::<T>::from_request(request, state)
            .await
            .map_err(|_| AdminError::Csrf)?;
        admin.check_csrf(form.csrf())?;
        Ok(Self { admin, form })
    }
}

/// A form with nothing but its token (logout, pause, resume, retry).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenOnly {
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

impl CsrfForm for TokenOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `GET /admin/login`: the form, with a fresh nonce cookie its token is tied to.
pub async fn login_form(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if Admin::from_request_parts(&mut parts, &state).await.is_ok() {
        return Redirect::to("/admin").into_response();
    }
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let nonce = random_token();
    let token = sign(nonce.as_bytes(), LOGIN_LABEL);
    let mut response = (status, view::login_page(&token, error)).into_response();
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, LOGIN_NONCE_TTL_S),
    );
    response
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

/// `POST /admin/login`: checks the form's token, then the key as the API checks a
/// bearer key; an admin key gets a session.
pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let nonce = cookie(&parts.headers, LOGIN_COOKIE)
        .unwrap_or("")
        .to_string();
    let client = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
    let form = match Form::<LoginForm>::from_request(Request::from_parts(parts, body), &state).await
    {
        Ok(Form(form)) => form,
        Err(_) => return AdminError::Csrf.into_response(),
    };
    if nonce.is_empty() || !verify(nonce.as_bytes(), LOGIN_LABEL, &form.csrf) {
        return AdminError::Csrf.into_response();
    }
    // The key goes through the API's own bearer authentication, with the client's
    // address, so the login form spends the same failure budget as bad bearer keys.
    let mut check = Request::builder();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", form.key.trim())) {
        check = check.header(AUTHORIZATION, value);
    }
    let Ok(check) = check.body(()) else {
        return AdminError::BadForm("unreadable key".into()).into_response();
    };
    let (mut check, ()) = check.into_parts();
    if let Some(client) = client {
        check.extensions.insert(client);
    }
    let caller = match Caller::from_request_parts(&mut check, &state).await {
        Ok(caller) => caller,
        Err(ApiError::Unauthorized) => {
            let shaped = is_key_shaped(form.key.trim());
            let why = if shaped {
                "That key is not valid (unknown or revoked)."
            } else {
                "That is not a voxq key (vxq_ and 64 hex digits)."
            };
            return login_page(StatusCode::UNAUTHORIZED, Some(why));
        }
        Err(e) => return AdminError::Api(e).into_response(),
    };
    if !is_admin(&caller.0) {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("That key has neither the 'admin' nor the 'operator' scope."),
        );
    }
    let token = random_token();
    if let Err(e) = shared::db::admin::create_session(
        &state.db,
        &session_hash(&token),
        caller.0.id,
        SESSION_TTL,
    )
    .await
    {
        return AdminError::from(e).into_response();
    }
    tracing::info!(key = %caller.0.id, tenant = %caller.tenant_id(), "admin signed in");
    let mut response = Redirect::to("/admin").into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, SESSION_TTL.as_secs()),
    );
    headers.append(SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0));
    response
}

/// `POST /admin/logout`: ends the session and clears its cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    posted: Posted<TokenOnly>,
) -> Result<Response, AdminError> {
    if posted.admin.by_session {
        if let Some(token) = cookie(&headers, SESSION_COOKIE) {
            shared::db::admin::delete_session(&state.db, &session_hash(token)).await?;
        }
    }
    let mut response = Redirect::to("/admin/login").into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_verify_only_under_their_own_credential() {
        let (a, b) = (random_token(), random_token());
        let token = sign(a.as_bytes(), CSRF_LABEL);
        assert!(verify(a.as_bytes(), CSRF_LABEL, &token));
        assert!(!verify(b.as_bytes(), CSRF_LABEL, &token));
        assert!(!verify(a.as_bytes(), LOGIN_LABEL, &token));
        for bad in ["", "zz", &token[..62], &a] {
            assert!(!verify(a.as_bytes(), CSRF_LABEL, bad), "{bad}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("voxq_admin_login=n1; voxq_admin=t1"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("t1"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("n1"));
        assert_eq!(cookie(&headers, "voxq"), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure() {
        let v = set_cookie(SESSION_COOKIE, "abc", 60);
        let v = v.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/admin"] {
            assert!(v.contains(part), "{v}");
        }
    }
}
