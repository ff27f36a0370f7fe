//! The dashboard's pages: each reads what it shows from the ledger and Redis, and renders it.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use baton_core::BuildStatus;
use baton_ledger::listings::{Activity, BuildFilter, BuildRow};
use baton_ledger::projects::ProjectSummary;
use baton_ledger::reports::Stats;
use baton_ledger::threads::ThreadSummary;
use baton_ledger::{BuildState, LedgerError};
use baton_queue::ConsumerInfo;
use baton_transcript::conversation::Message;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{PageError, charts, render};
use crate::api::Api;
use crate::api::error::PathParam;

/// Builds a page lists.
const PAGE_SIZE: i64 = 50;

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    lag: u64,
    pending: u64,
    dead_letters: u64,
    activity: Activity,
    workers: Vec<ConsumerInfo>,
    stats: Stats,
    jobs_chart: String,
    cost_chart: String,
}

pub(crate) async fn overview(State(api): State<Api>) -> Result<Response, PageError> {
    let queue = api.queue();
    let activity = api.ledger().activity().await?;
    let ended: Vec<f64> = activity
        .ended_per_minute
        .iter()
        .map(|n| *n as f64)
        .collect();
    let page = Overview {
        lag: queue.lag().await?,
        pending: queue.pending_count().await?,
        dead_letters: queue.dead_letter_length().await?,
        workers: queue.consumers().await?,
        stats: api.ledger().stats().await?,
        jobs_chart: charts::bars(&ended, "Builds ended per minute over the last hour"),
        cost_chart: charts::bars(&activity.cost_per_hour, "Cost per hour over the last day"),
        activity,
    };
    Ok(render(&page))
}

/// One `<option>` of a filter.
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn choices(options: &[(&str, &str)], chosen: &str) -> Vec<Choice> {
    options
        .iter()
        .map(|(value, label)| Choice {
            value: value.to_string(),
            label: label.to_string(),
            selected: *value == chosen,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "builds.html")]
struct Builds {
    builds: Vec<BuildRow>,
    statuses: Vec<Choice>,
    kinds: Vec<Choice>,
    sinces: Vec<Choice>,
    project: String,
    live_url: String,
    next_url: Option<String>,
}

#[derive(Template)]
#[template(path = "build_rows.html")]
struct BuildRows {
    builds: Vec<BuildRow>,
}

/// The builds list's filters and page, as its URL carries them.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BuildsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    kind: String,
    /// `1h`, `24h` or `7d`.
    #[serde(default)]
    since: String,
    /// The last row of the page before: `<made, RFC 3339>/<build id>`.
    #[serde(default)]
    before: String,
    /// `rows`: only the table's rows, for the live refresh.
    #[serde(default)]
    fragment: String,
}

impl BuildsQuery {
    fn filter(&self) -> Result<BuildFilter, PageError> {
        let bad = |what: &str| PageError::bad_request(what.to_string(), "/builds");
        let status = match self.status.as_str() {
            "" => None,
            s => Some(BuildStatus::from_name(s).ok_or_else(|| bad("no such status"))?),
        };
        let since = match self.since.as_str() {
            "" => None,
            "1h" => Some(Utc::now() - chrono::Duration::hours(1)),
            "24h" => Some(Utc::now() - chrono::Duration::hours(24)),
            "7d" => Some(Utc::now() - chrono::Duration::days(7)),
            _ => return Err(bad("since is 1h, 24h or 7d")),
        };
        let before = match self.before.split_once('/') {
            None if self.before.is_empty() => None,
            Some((at, id)) => Some((
                DateTime::parse_from_rfc3339(at)
                    .map_err(|_| bad("not a page of builds"))?
                    .with_timezone(&Utc),
                id.to_string(),
            )),
            None => return Err(bad("not a page of builds")),
        };
        Ok(BuildFilter {
            status,
            project_id: Some(self.project.trim().to_string()).filter(|p| !p.is_empty()),
            kind: Some(self.kind.clone()).filter(|k| !k.is_empty()),
            since,
            before,
            limit: PAGE_SIZE,
        })
    }

    /// This listing's URL, with `extra` parameters.
    fn url(&self, extra: &[(&str, &str)]) -> String {
        let mut params: Vec<(&str, &str)> = [
            ("status", self.status.as_str()),
            ("project", self.project.as_str()),
            ("kind", self.kind.as_str()),
            ("since", self.since.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        params.extend_from_slice(extra);
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        format!("/builds?{}", query.join("&"))
    }
}

pub(crate) async fn builds(
    State(api): State<Api>,
    Query(query): Query<BuildsQuery>,
) -> Result<Response, PageError> {
    let builds = api.ledger().builds_page(&query.filter()?).await?;
    if query.fragment == "rows" {
        return Ok(render(&BuildRows { builds }));
    }
    let next_url = (builds.len() as i64 == PAGE_SIZE)
        .then(|| builds.last())
        .flatten()
        .map(|last| {
            let cursor = format!("{}/{}", last.created_at.to_rfc3339(), last.build_id);
            query.url(&[("before", &cursor)])
        });
    // The first page refreshes itself; older pages stay as they are.
    let live_url = if query.before.is_empty() {
        query.url(&[("fragment", "rows")])
    } else {
        String::new()
    };
    let statuses = ["queued", "running", "completed", "failed", "cancelled"];
    let kinds = ["create", "update", "chat_plan", "chat", "plan"];
    let page = Builds {
        builds,
        statuses: choices(&statuses.map(|s| (s, s)), &query.status),
        kinds: choices(&kinds.map(|k| (k, k)), &query.kind),
        sinces: choices(
            &[
                ("1h", "last hour"),
                ("24h", "last day"),
                ("7d", "last week"),
            ],
            &query.since,
        ),
        project: query.project.clone(),
        live_url,
        next_url,
    };
    Ok(render(&page))
}

#[derive(Template)]
#[template(path = "build.html")]
struct Build {
    b: BuildState,
}

pub(crate) async fn build(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Response, PageError> {
    match api.ledger().build_state(&id).await {
        Ok(b) => Ok(render(&Build { b })),
        Err(LedgerError::UnknownBuild(_)) => Err(PageError::not_found(format!("No build {id}."))),
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "project.html")]
struct Project {
    p: ProjectSummary,
    threads: Vec<ThreadSummary>,
    builds: Vec<BuildRow>,
    graph: String,
}

pub(crate) async fn project(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Response, PageError> {
    let ledger = api.ledger();
    let p = match ledger.project_summary(&id).await {
        Ok(p) => p,
        Err(LedgerError::UnknownProject(_)) => {
            return Err(PageError::not_found(format!("No project {id}.")));
        }
        Err(e) => return Err(e.into()),
    };
    let threads = ledger.threads(&p.user_id, Some(&id)).await?;
    let mut lanes = vec![("main".to_string(), ledger.chain(&id).await?)];
    for t in &threads {
        let chain = ledger.chain_of(&id, Some(&t.thread_id)).await?;
        lanes.push((format!("thread {}", t.thread_id), chain));
    }
    let builds = ledger
        .builds_page(&BuildFilter {
            project_id: Some(id.clone()),
            limit: 20,
            ..BuildFilter::default()
        })
        .await?;
    let page = Project {
        graph: charts::session_graph(&lanes),
        p,
        threads,
        builds,
    };
    Ok(render(&page))
}

#[derive(Template)]
#[template(path = "session.html")]
struct Session {
    session_id: String,
    messages: Vec<Message>,
    incomplete: Option<String>,
}

pub(crate) async fn session(
    State(api): State<Api>,
    PathParam(id): PathParam<String>,
) -> Result<Response, PageError> {
    let ledger = api.ledger();
    let Some(stored) = ledger.stored_session(&id).await? else {
        return Err(PageError::not_found(format!(
            "The ledger holds no files of session {id}."
        )));
    };
    let files = ledger.stored_files(&id, None).await?;
    let messages = files
        .first()
        .map(|t| baton_transcript::conversation::messages(&t.bytes))
        .unwrap_or_default();
    Ok(render(&Session {
        session_id: id,
        messages,
        incomplete: stored.incomplete,
    }))
}

/// A dead letter as the page lists it.
struct DeadRow {
    id: String,
    reason: String,
    attempts: String,
    build_id: Option<String>,
    payload: String,
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLetters {
    entries: Vec<DeadRow>,
}

pub(crate) async fn dead_letters(State(api): State<Api>) -> Result<Response, PageError> {
    let entries = api
        .queue()
        .dead_letters(500)
        .await?
        .into_iter()
        .map(|e| {
            let field = |k: &str| e.fields.get(k).cloned().unwrap_or_default();
            DeadRow {
                build_id: e.build_id(),
                reason: field("reason"),
                attempts: field("attempts"),
                payload: field("payload"),
                id: e.id,
            }
        })
        .collect();
    Ok(render(&DeadLetters { entries }))
}

/// What the search box sends.
#[derive(Deserialize)]
pub(crate) struct Go {
    id: String,
}

/// Opens whatever the id names: a build, a project or a session, in that order.
pub(crate) async fn go(
    State(api): State<Api>,
    Query(Go { id }): Query<Go>,
) -> Result<Response, PageError> {
    let id = id.trim();
    let ledger = api.ledger();
    let known = |r: Result<_, LedgerError>| match r {
        Ok(_) => Ok(true),
        Err(LedgerError::UnknownBuild(_) | LedgerError::UnknownProject(_)) => Ok(false),
        Err(e) => Err(PageError::from(e)),
    };
    let path =
        if baton_core::job::validate_id("id", id, baton_core::job::MAX_SESSION_ID_LEN).is_err() {
            None
        } else if known(ledger.build_state(id).await.map(|_| ()))? {
            Some(format!("/builds/{id}"))
        } else if known(ledger.project_summary(id).await.map(|_| ()))? {
            Some(format!("/projects/{id}"))
        } else if ledger.stored_session(id).await?.is_some() {
            Some(format!("/sessions/{id}"))
        } else {
            None
        };
    match path {
        Some(path) => Ok(Redirect::to(&path).into_response()),
        None => Err(PageError::not_found(format!(
            "No build, project or session is called {id:?}."
        ))),
    }
}

/// `text` for a URL's query.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
