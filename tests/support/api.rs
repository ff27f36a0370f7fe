//! `baton serve` in a test: the real binary on a free loopback port, and a small HTTP client.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::TestEnv;

/// A running `baton serve`, stopped when dropped.
pub struct ApiServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The token requests carry, if any.
    pub token: Option<String>,
    agent: ureq::Agent,
}

/// An answer: its status, headers we look at, and its body as text.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `content-type` header.
    pub content_type: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The error code of a JSON error answer, asserting its shape.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error has a message: {v}"
        );
        v["error"]["code"]
            .as_str()
            .expect("an error code")
            .to_string()
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    /// Its `id:`, when it has one.
    pub id: Option<String>,
    /// Its `event:`.
    pub event: String,
    /// Its `data:`, parsed.
    pub data: Value,
}

impl TestEnv {
    /// Starts `baton serve` on a free loopback port with these tokens and extra environment.
    pub fn start_api(&self, tokens: &[&str], extra: &[(&str, &str)]) -> ApiServer {
        let log = self
            .dir
            .path()
            .join(format!("api-{}.log", uuid::Uuid::new_v4().simple()));
        let child = self
            .command("baton")
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("BATON_API_TOKENS", tokens.join(","))
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("api log"))
            .spawn()
            .expect("start baton serve");
        let start = Instant::now();
        let base = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|l| l.strip_prefix("baton: serving the API on "))
                .and_then(|rest| rest.split_whitespace().next())
            {
                break url.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "baton serve did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        ApiServer {
            child,
            base,
            token: tokens.first().map(|t| t.to_string()),
            agent,
        }
    }
}

impl ApiServer {
    /// A request with this method, path, headers and JSON body, carrying the token.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some(b) => self.agent.run(
                req.header("content-type", "application/json")
                    .body(b.to_string())
                    .expect("a request"),
            ),
            None => self.agent.run(req.body(()).expect("a request")),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // Lossy: an archive's bytes are not text, and only their length matters to a test.
        let body = resp
            .into_body()
            .read_to_vec()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        Answer {
            status,
            content_type,
            body,
        }
    }

    /// `GET` with the token.
    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, &[], None)
    }

    /// `POST` of a JSON body with the token.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, &[], Some(&body.to_string()))
    }

    /// Reads a build's event stream to its end (the server ends it after the final event),
    /// starting after `last_event_id` when given.
    pub fn events(&self, build: &str, last_event_id: Option<&str>) -> Vec<Sse> {
        let url = format!("{}/v1/builds/{build}/events", self.base);
        let mut req = ureq::http::Request::builder().method("GET").uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = self
            .agent
            .run(req.body(()).expect("a request"))
            .expect("the event stream");
        assert_eq!(resp.status().as_u16(), 200);
        let content_type = resp.headers().get("content-type").cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        let mut events = Vec::new();
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in reader.lines() {
            let line = line.expect("a line of the stream");
            if line.is_empty() {
                if !data.is_empty() {
                    events.push(Sse {
                        id: id.take(),
                        event: std::mem::take(&mut event),
                        data: serde_json::from_str(&data).expect("data is JSON"),
                    });
                }
                data.clear();
                continue;
            }
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        events
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
