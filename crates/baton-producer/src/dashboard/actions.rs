//! The dashboard's buttons: cancel a build, retry a failed one, reset a project's session, replay
//! or purge a dead letter. Each is a form POST that ends on the page it came from, so it works
//! without JavaScript; the ones that cannot be undone ask for a ticked box.

use axum::Form;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::PageError;
use crate::api::Api;
use crate::api::error::PathParam;

/// A form with the confirmation box.
#[derive(Deserialize)]
pub(crate) struct Confirmed {
    #[serde(default)]
    confirm: String,
}

impl Confirmed {
    fn check(&self, back: &str) -> Result<(), PageError> {
        if self.confirm == "yes" {
            Ok(())
        } else {
            Err(PageError::bad_request(
                "Tick the box to confirm, then try again.",
                back,
            ))
        }
    }
}

pub(crate) async fn cancel(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Response, PageError> {
    let back = format!("/builds/{id}");
    match crate::cancel::cancel(api.queue(), api.ledger(), &id).await? {
        baton_ledger::cancel::Cancel::Ended(status) => Err(PageError::conflict(
            format!("Build {id} had already ended ({}).", status.as_str()),
            back,
        )),
        _ => Ok(Redirect::to(&back).into_response()),
    }
}

/// Replays the failed build's dead letter (its newest, of the last 10,000).
pub(crate) async fn retry(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Response, PageError> {
    let back = format!("/builds/{id}");
    let letters = api.queue().dead_letters(10_000).await?;
    let letter = letters
        .iter()
        .rev()
        .find(|e| e.build_id().as_deref() == Some(id.as_str()));
    let Some(letter) = letter else {
        return Err(PageError::conflict(
            format!("Build {id} has no dead letter to replay."),
            back,
        ));
    };
    crate::dead_letters::replay(api.queue(), api.ledger(), &letter.id).await?;
    Ok(Redirect::to(&back).into_response())
}

pub(crate) async fn reset(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
    Form(form): Form<Confirmed>,
) -> Result<Response, PageError> {
    let back = format!("/projects/{id}");
    form.check(&back)?;
    api.ledger().reset_session(&id).await?;
    Ok(Redirect::to(&back).into_response())
}

pub(crate) async fn replay(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
    Form(form): Form<Confirmed>,
) -> Result<Response, PageError> {
    form.check("/dead-letters")?;
    match crate::dead_letters::replay(api.queue(), api.ledger(), &id).await? {
        Some(replayed) => Ok(Redirect::to(&match replayed.build_id {
            Some(build) => format!("/builds/{build}"),
            None => "/dead-letters".to_string(),
        })
        .into_response()),
        None => Err(PageError::not_found(format!("No dead letter {id}."))),
    }
}

pub(crate) async fn purge(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
    Form(form): Form<Confirmed>,
) -> Result<Response, PageError> {
    form.check("/dead-letters")?;
    match api.queue().purge_dead_letters(Some(&id)).await? {
        0 => Err(PageError::not_found(format!("No dead letter {id}."))),
        _ => Ok(Redirect::to("/dead-letters").into_response()),
    }
}
