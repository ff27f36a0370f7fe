//! `baton serve` end to end: auth, idempotent builds, live progress as server-sent events,
//! cancellation, errors as JSON, and the OpenAPI document against the routes.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_tests::TestEnv;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

fn build_body(project: &str, version: &str, kind: &str, prompt: &str) -> Value {
    json!({"kind": kind, "project_id": project, "version_id": version, "prompt": prompt})
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_required_when_set_and_away_from_loopback() {
    let env = TestEnv::new().await;
    let mut api = env.start_api(&["t-one", "t-two"], &[]);
    assert_eq!(api.get("/v1/stats").status, 200);
    api.token = Some("t-two".into());
    assert_eq!(api.get("/v1/stats").status, 200, "every token is taken");
    api.token = Some("t-on".into());
    let wrong = api.get("/v1/stats");
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (401, "unauthorized")
    );
    api.token = None;
    let none = api.get("/v1/builds/x");
    assert_eq!(
        (none.status, none.error_code().as_str()),
        (401, "unauthorized")
    );
    assert_eq!(api.get("/healthz").status, 200, "/healthz is open");

    // Away from loopback, no token means no server.
    let out = env
        .command("baton")
        .args(["serve", "--addr", "0.0.0.0:0"])
        .env("BATON_API_TOKENS", "")
        .output()
        .expect("run baton serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BATON_API_TOKENS"), "{stderr}");

    // On loopback without tokens, the API is open.
    let open = env.start_api(&[], &[]);
    assert_eq!(open.get("/v1/stats").status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_made_over_http_is_idempotent_and_streams_its_events_to_its_end() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&["tok"], &[]);
    let body = build_body("web", "web-v1", "create", "Build a site");
    let key = [("idempotency-key", "order-17")];
    let created = api.request("POST", "/v1/builds", &key, Some(&body.to_string()));
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let build = created["build_id"].as_str().unwrap().to_string();
    assert_eq!(build, "order-17", "the key names the build");
    assert_eq!(created["status"], "queued");
    assert!(
        created["stream_id"]
            .as_str()
            .is_some_and(|s| s.contains('-'))
    );

    let again = api.request("POST", "/v1/builds", &key, Some(&body.to_string()));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["build_id"], build.as_str());
    let other = build_body("web", "web-v1", "create", "Something else");
    let conflict = api.request("POST", "/v1/builds", &key, Some(&other.to_string()));
    assert_eq!(
        (conflict.status, conflict.error_code().as_str()),
        (409, "build_id_reused")
    );

    env.start_worker();
    let events = api.events(&build, None);
    let types: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(types.first(), Some(&"job_started"), "{types:?}");
    assert_eq!(types.last(), Some(&"job_completed"), "{types:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "run_finished").count(),
        4,
        "{types:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.id.is_some() && e.data["build_id"] == build.as_str())
    );
    assert!(
        events.iter().all(|e| e.data["event"] == e.event.as_str()),
        "data is the event's JSON"
    );
    // A single entry of the build: the retry enqueued nothing.
    assert_eq!(types.iter().filter(|t| **t == "job_started").count(), 1);

    // Reconnecting after the third event gets only what came after.
    let third = events[2].id.clone().unwrap();
    let rest = api.events(&build, Some(&third));
    assert_eq!(rest, events[3..].to_vec());

    let state = api.get(&format!("/v1/builds/{build}")).json();
    assert_eq!(state["status"], "completed");
    let session = state["runs"][3]["new_session_id"].clone();
    let project = api.get("/v1/projects/web").json();
    assert_eq!(project["session_id"], session);
    assert_eq!(
        (project["builds"].as_i64(), project["runs"].as_i64()),
        (Some(1), Some(4))
    );
    let shown = api
        .get(&format!("/v1/sessions/{}", session.as_str().unwrap()))
        .json();
    assert_eq!(shown["session_id"], session);
    assert_eq!(shown["runs"].as_i64(), Some(4));
    let archive = api.get(&format!(
        "/v1/sessions/{}/export",
        session.as_str().unwrap()
    ));
    assert_eq!(
        (archive.status, archive.content_type.as_str()),
        (200, "application/gzip")
    );
    let chain = api.get("/v1/projects/web/chain").json();
    assert_eq!(chain.as_array().map(Vec::len), Some(4));
    let sync = api.get("/v1/sync").json();
    assert_eq!(
        (sync["synced"].as_i64(), sync["total"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(api.get("/v1/stats").status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_whose_events_were_trimmed_away_still_gets_its_final_event_from_the_ledger() {
    let mut env = TestEnv::new().await;
    env.start_worker();
    let api = env.start_api(&[], &[]);
    let build = env.enqueue("trim", "trim-v1", "create", "Build it");
    let done = env.wait_finished(&build, LIMIT);
    let mut redis = env.redis().await;
    let _: i64 = redis::cmd("XTRIM")
        .arg(format!("{}:events", env.stream))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut redis)
        .await
        .expect("XTRIM");
    let events = api.events(&build, None);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "job_completed");
    assert_eq!(
        events[0].id, None,
        "made from the ledger, it has no stream id"
    );
    assert_eq!(
        events[0].data["session_id"],
        done["runs"][3]["new_session_id"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_build_cancelled_never_starts_and_its_stream_ends_cancelled() {
    let mut env = TestEnv::new().await;
    let api = env.start_api(&["tok"], &[]);
    let created = api.post("/v1/builds", &build_body("q", "q-v1", "create", "Build it"));
    assert_eq!(created.status, 201);
    let build = created.json()["build_id"].as_str().unwrap().to_string();

    let cancelled = api.request("POST", &format!("/v1/builds/{build}/cancel"), &[], None);
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    assert_eq!(cancelled.json()["result"], "cancelled");
    let events = api.events(&build, None);
    assert_eq!(
        events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["job_cancelled"]
    );
    let again = api.request("POST", &format!("/v1/builds/{build}/cancel"), &[], None);
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "build_ended")
    );
    // `baton cancel` says the same.
    let out = env.baton(&["cancel", &build]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A worker that reads its entry acknowledges it without running anything.
    env.start_worker();
    let next = env.enqueue("q", "q-v2", "create", "Build it for real");
    env.wait_finished(&next, LIMIT);
    let runs = env.emulator_runs();
    assert_eq!(runs.len(), 4, "only the second build ran: {runs:?}");
    assert_eq!(env.status(&build)["status"], "cancelled");
    assert_eq!(env.status(&build)["runs"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_build_cancelled_stops_its_cli_records_nothing_and_the_next_job_resumes() {
    let mut env = TestEnv::new().await;
    env.fast_timing("3");
    env.slow_prompts("SLOW", "60000");
    env.start_worker();
    let api = env.start_api(&["tok"], &[]);
    let first = env.enqueue("run", "run-v1", "create", "Build it");
    let done = env.wait_finished(&first, LIMIT);
    let left = done["runs"][3]["new_session_id"]
        .as_str()
        .unwrap()
        .to_string();

    let slow = env.enqueue("run", "run-v2", "update", "SLOW change");
    env.wait_until(LIMIT, "the slow run to start", || env.worker_has_child(0));
    let asked = api.request("POST", &format!("/v1/builds/{slow}/cancel"), &[], None);
    assert_eq!(asked.status, 202, "{}", asked.body);
    assert_eq!(asked.json()["result"], "requested");
    let events = api.events(&slow, None);
    let last = events.last().expect("events");
    assert_eq!(last.event, "job_cancelled", "{events:?}");
    assert_eq!(last.data["session_id"], left.as_str());
    assert_eq!(env.status(&slow)["status"], "cancelled");
    env.wait_until(LIMIT, "the CLI to be gone", || !env.worker_has_child(0));
    assert_eq!(
        env.status(&slow)["runs"].as_array().map(Vec::len),
        Some(0),
        "the cut run is not recorded"
    );
    let chain = env.baton_json(&["chain", "run"]);
    assert_eq!(chain.as_array().map(Vec::len), Some(4), "{chain}");

    let next = env.enqueue("run", "run-v3", "update", "A quick change");
    let next = env.wait_finished(&next, LIMIT);
    assert_eq!(next["status"], "completed");
    assert_eq!(
        next["runs"][0]["old_session_id"],
        left.as_str(),
        "the next job resumes the session the last recorded run left"
    );
    env.assert_in_sync();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_json_with_its_status() {
    let env = TestEnv::new().await;
    let api = env.start_api(&["tok"], &[("BATON_API_MAX_BODY", "2KiB")]);
    let cases: Vec<(cases::Case, u16, &str)> = vec![
        (cases::get("/nope"), 404, "not_found"),
        (cases::get("/v1/builds/unknown"), 404, "not_found"),
        (cases::get("/v1/projects/unknown"), 404, "not_found"),
        (cases::get("/v1/projects/unknown/chain"), 404, "not_found"),
        (
            cases::post("/v1/builds/unknown/cancel", None),
            404,
            "not_found",
        ),
        (
            cases::post("/v1/dead-letters/1-1/replay", None),
            404,
            "not_found",
        ),
        (cases::get("/v1/dead-letters?limit=0"), 400, "bad_query"),
        (cases::get("/v1/dead-letters?limit=x"), 400, "bad_query"),
        (
            cases::post("/v1/builds", Some("{not json")),
            400,
            "malformed_body",
        ),
        (
            cases::post("/v1/builds", Some(r#"{"kind":"create"}"#)),
            422,
            "invalid_body",
        ),
        (
            cases::post(
                "/v1/builds",
                Some(&build_body("p", "v", "nope", "x").to_string()),
            ),
            422,
            "invalid_job",
        ),
        (
            cases::post(
                "/v1/builds",
                Some(&build_body("../p", "v", "create", "x").to_string()),
            ),
            422,
            "invalid_job",
        ),
        (
            cases::post(
                "/v1/builds",
                Some(&build_body("p", "v", "create", &"x".repeat(4096)).to_string()),
            ),
            413,
            "body_too_large",
        ),
        (
            cases::Case("DELETE", "/v1/stats".into(), None),
            405,
            "method_not_allowed",
        ),
    ];
    for (case, status, code) in cases {
        let cases::Case(method, path, body) = &case;
        let a = api.request(method, path, &[], body.as_deref());
        assert_eq!(
            (a.status, a.error_code().as_str()),
            (status, code),
            "{method} {path}: {}",
            a.body
        );
        assert!(a.content_type.starts_with("application/json"), "{case:?}");
    }
    let missing_type = api.request(
        "POST",
        "/v1/builds",
        &[("content-type", "text/plain")],
        None,
    );
    assert!(
        (400..500).contains(&missing_type.status),
        "{}",
        missing_type.status
    );
    let bad_id = {
        let created = api.post("/v1/builds", &build_body("e", "e-v1", "create", "x"));
        let build = created.json()["build_id"].as_str().unwrap().to_string();
        api.request(
            "GET",
            &format!("/v1/builds/{build}/events"),
            &[("last-event-id", "yesterday")],
            None,
        )
    };
    assert_eq!(
        (bad_id.status, bad_id.error_code().as_str()),
        (400, "bad_last_event_id")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_exactly_the_routes_the_server_answers() {
    let env = TestEnv::new().await;
    let api = env.start_api(&["tok"], &[]);
    let doc = api.get("/v1/openapi.json").json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/v1/builds"),
        ("GET", "/v1/builds/{id}"),
        ("POST", "/v1/builds/{id}/cancel"),
        ("GET", "/v1/builds/{id}/events"),
        ("GET", "/v1/projects/{id}"),
        ("GET", "/v1/projects/{id}/chain"),
        ("POST", "/v1/projects/{id}/session/reset"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/sync"),
        ("GET", "/v1/dead-letters"),
        ("POST", "/v1/dead-letters/{id}/replay"),
        ("DELETE", "/v1/dead-letters/{id}"),
        ("GET", "/v1/dead-letters/{id}"),
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks/{id}/retry"),
        ("GET", "/v1/sessions/{id}"),
        ("GET", "/v1/sessions/{id}/export"),
        ("GET", "/v1/threads"),
        ("GET", "/v1/projects/{project}/threads/{thread}"),
        ("DELETE", "/v1/projects/{project}/threads/{thread}"),
        ("POST", "/v1/projects/{project}/threads/{thread}/fork"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, expected);
    // Every documented operation is served: none falls through to "no such route".
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "no-such-thing")
            .replace("{project}", "no-such-thing")
            .replace("{thread}", "no-such-thing");
        let body = (method == "POST" && path == "/v1/builds").then_some("{}");
        let a = api.request(method, &concrete, &[], body);
        let fell_through = a.status == 404 && a.json()["error"]["message"] == "no such route";
        assert!(
            !fell_through,
            "{method} {path} is documented but not served"
        );
        assert!(a.status < 500, "{method} {path}: {}", a.body);
    }
}

/// Requests as data, for the table of error cases.
mod cases {
    /// A method, a path and a body.
    #[derive(Debug)]
    pub struct Case(pub &'static str, pub String, pub Option<String>);

    pub fn get(path: &str) -> Case {
        Case("GET", path.to_string(), None)
    }

    pub fn post(path: &str, body: Option<&str>) -> Case {
        Case("POST", path.to_string(), body.map(str::to_string))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    // The test recipe installs schemathesis (PyPI); it generates requests from the document, in
    // and out of its bounds, and checks every answer against it.
    let mut env = TestEnv::new().await;
    env.start_worker();
    let api = env.start_api(&["tok"], &[]);
    // Something to find: a project with a completed build, and a dead letter.
    let made = api.post(
        "/v1/builds",
        &build_body("st", "st-v1", "create", "Build it"),
    );
    let build = made.json()["build_id"].as_str().unwrap().to_string();
    env.wait_finished(&build, LIMIT);
    let mut redis = env.redis().await;
    let _: String = redis::cmd("XADD")
        .arg(&env.stream)
        .arg("*")
        .arg("job")
        .arg("{not a job")
        .query_async(&mut redis)
        .await
        .expect("XADD");
    env.wait_until(LIMIT, "the garbage to be dead-lettered", || {
        api.get("/v1/dead-letters")
            .json()
            .as_array()
            .is_some_and(|l| !l.is_empty())
    });
    let out = std::process::Command::new("schemathesis")
        .current_dir(env.dir.path())
        .args([
            "run",
            &format!("{}/v1/openapi.json", api.base),
            "--header",
            "Authorization: Bearer tok",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis is missing: `pip install schemathesis` (`just test` installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("21 selected"),
        "every operation was tested:\n{report}"
    );
}
