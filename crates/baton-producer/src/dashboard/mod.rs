//! The dashboard: the queue, builds, projects with their sessions and threads, conversations and
//! dead letters as server-rendered pages, served by `baton serve` at `/` beside the API, with the
//! same tokens (a sign-in sets an HTTP-only cookie; no sign-in on loopback without tokens). Pages
//! read without JavaScript; a small script served from the binary makes the builds list and a
//! build's events live.

mod actions;
mod charts;
mod pages;
mod sign_in;

use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::Api;

/// The dashboard's routes: its pages and actions behind the sign-in, the sign-in and the assets
/// outside it.
pub(crate) fn router(api: Api) -> Router<Api> {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/go", get(pages::go))
        .route("/builds", get(pages::builds))
        .route("/builds/{id}", get(pages::build))
        .route("/builds/{id}/cancel", post(actions::cancel))
        .route("/builds/{id}/retry", post(actions::retry))
        .route("/projects/{id}", get(pages::project))
        .route("/projects/{id}/reset", post(actions::reset))
        .route("/sessions/{id}", get(pages::session))
        .route("/dead-letters", get(pages::dead_letters))
        .route("/dead-letters/{id}/replay", post(actions::replay))
        .route("/dead-letters/{id}/purge", post(actions::purge))
        .route("/logout", post(sign_in::sign_out))
        .layer(axum::middleware::from_fn_with_state(
            api,
            sign_in::require_sign_in,
        ));
    Router::new()
        .merge(pages)
        .route("/login", get(sign_in::page).post(sign_in::sign_in))
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A page that could not be shown, shown as a page that says why.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    title: &'static str,
    message: String,
    back: String,
}

impl PageError {
    /// 404: no such thing.
    pub(crate) fn not_found(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            message: message.into(),
            back: "/".into(),
        }
    }

    /// 409: the action does not fit what is there; `back` is where to go from here.
    pub(crate) fn conflict(message: impl Into<String>, back: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::CONFLICT,
            title: "Not done",
            message: message.into(),
            back: back.into(),
        }
    }

    /// 400: the form was not filled in as asked.
    pub(crate) fn bad_request(message: impl Into<String>, back: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::BAD_REQUEST,
            title: "Not done",
            message: message.into(),
            back: back.into(),
        }
    }
}

/// The message page.
#[derive(Template)]
#[template(path = "message.html")]
struct Message<'a> {
    title: &'a str,
    message: &'a str,
    back: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = Message {
            title: self.title,
            message: &self.message,
            back: &self.back,
        };
        (self.status, render(&page)).into_response()
    }
}

/// Redis or Postgres failed: a 503 page; the details go to the log, not the page.
impl<E: Into<crate::api::error::ApiError>> From<E> for PageError {
    fn from(e: E) -> PageError {
        let e = e.into();
        PageError {
            status: e.status,
            title: if e.status.is_server_error() {
                "Unavailable"
            } else {
                "Not done"
            },
            message: e.message,
            back: "/".into(),
        }
    }
}

/// A template as an HTML answer. Rendering fails only on a bug in a template's own code, which
/// the tests render; it answers 500 rather than panic.
pub(crate) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}
