//! Signing in to the dashboard with one of the API's tokens: the token is checked once and an
//! HTTP-only, SameSite=Strict cookie derived from it (never the token itself) is set. Without
//! tokens (loopback only, as `baton serve` insists) there is nothing to sign in to.

use askama::Template;
use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::render;
use crate::api::Api;
use crate::api::auth::{COOKIE_NAME, cookie_value};

/// How long a sign-in lasts.
const SIGN_IN_SECONDS: u32 = 12 * 3600;

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    error: Option<&'static str>,
}

/// Lets a request through when the dashboard needs no sign-in or the request is signed in; sends
/// anyone else to the sign-in page. A form another site's page sends is refused: without tokens
/// (loopback) no cookie stands in its way.
pub(crate) async fn require_sign_in(
    State(api): State<Api>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != axum::http::Method::GET && !same_origin(request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "the dashboard takes its forms only from its own pages",
        )
            .into_response();
    }
    let tokens = api.tokens();
    if tokens.is_empty() || tokens.signed_in(request.headers()) {
        next.run(request).await
    } else {
        Redirect::to("/login").into_response()
    }
}

pub(crate) async fn page(State(api): State<Api>) -> Response {
    if api.tokens().is_empty() {
        return Redirect::to("/").into_response();
    }
    render(&Login { error: None })
}

/// What the sign-in form sends.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    token: String,
}

pub(crate) async fn sign_in(State(api): State<Api>, Form(form): Form<Credentials>) -> Response {
    let token = form.token.trim().as_bytes();
    if !api.tokens().accepts(token) {
        let page = Login {
            error: Some("That is not one of this server's tokens."),
        };
        return (StatusCode::UNAUTHORIZED, render(&page)).into_response();
    }
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; Max-Age={SIGN_IN_SECONDS}; HttpOnly; Secure; SameSite=Strict",
        cookie_value(token)
    );
    with_cookie(Redirect::to("/").into_response(), &cookie)
}

pub(crate) async fn sign_out() -> Response {
    let cookie = format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    with_cookie(Redirect::to("/login").into_response(), &cookie)
}

/// Whether a request comes from the dashboard's own pages, as far as the browser says: no
/// `Origin` (not a browser's cross-site request), or one naming the host the request was sent to.
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority == host)
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_form_from_the_same_host_is_taken() {
        let headers = |origin: Option<&str>| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        assert!(same_origin(&headers(None)));
        assert!(same_origin(&headers(Some("http://127.0.0.1:8080"))));
        assert!(!same_origin(&headers(Some("http://evil.example"))));
        assert!(!same_origin(&headers(Some("http://127.0.0.1:9090"))));
        assert!(!same_origin(&headers(Some("null"))));
    }
}
