//! Who may read the HTTP side. With tokens configured, the dashboard, `/api` and `/metrics` need one, of any role
//! but agent: as `Authorization: Bearer <token>` (tools) or HTTP Basic auth with the token as the password
//! (browsers ask for it). `/healthz` stays open for load balancers. `[dashboard] public = true` opens everything;
//! without tokens the controller only listens on loopback, like the gRPC side.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::auth::{require, Auth, AuthError, READERS};
use crate::core::Farm;

/// The token a request carries: a bearer token, or the password of HTTP Basic auth.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// Lets readers through; asks everyone else for a token.
pub(super) async fn readers_only(
    State(farm): State<Arc<Farm>>,
    req: Request,
    next: Next,
) -> Response {
    let cfg = farm.config();
    if cfg.tokens.is_empty() || cfg.http_public || req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let auth = Auth::new(cfg.tokens.clone());
    let header = presented(req.headers()).map(|t| format!("Bearer {t}"));
    match auth
        .identify(header.as_deref(), None)
        .and_then(|c| require(&c, READERS, "reading the farm").map(|()| c))
    {
        Ok(_) => next.run(req).await,
        Err(e @ AuthError::Forbidden { .. }) => {
            (StatusCode::FORBIDDEN, format!("{e}\n")).into_response()
        }
        Err(e) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"nvfarm: your token is the password\", charset=\"UTF-8\"",
            )],
            format!("{e}; browsers: any user name, the token as the password\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_as_bearer_or_as_the_basic_password() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:tok:en");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(presented(&h).as_deref(), Some("tok:en"));
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(presented(&h), None);
    }
}
