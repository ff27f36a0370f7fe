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
/// anyone else to the sign-in page.
pub(crate) async fn require_sign_in(
    State(api): State<Api>,
    request: Request,
    next: Next,
) -> Response {
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

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
