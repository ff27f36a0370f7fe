//! A webhook endpoint for tests: records every request and answers each with the next planned
//! status (200 once the plan runs out).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request the endpoint got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// Its body.
    pub body: String,
}

/// A listening endpoint; stops when dropped.
pub struct Endpoint {
    /// `http://127.0.0.1:<port>/hook`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Listens on a free port, answering with `plan`'s statuses in turn, then 200.
    pub async fn start(plan: &[u16]) -> Endpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        Endpoint::on(listener, port, plan)
    }

    /// Listens on `port` (one a test kept free while the endpoint was down).
    pub async fn start_on(port: u16, plan: &[u16]) -> Endpoint {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the kept port");
        Endpoint::on(listener, port, plan)
    }

    fn on(listener: tokio::net::TcpListener, port: u16, plan: &[u16]) -> Endpoint {
        let received = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(plan.iter().copied().collect::<VecDeque<_>>()));
        let task = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let received = received.clone();
                    let plan = plan.clone();
                    tokio::spawn(async move {
                        let Some(request) = read_request(&mut conn).await else {
                            return;
                        };
                        received.lock().expect("lock").push(request);
                        let status = plan.lock().expect("lock").pop_front().unwrap_or(200);
                        let _ = conn
                            .write_all(
                                format!(
                                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                                )
                                .as_bytes(),
                            )
                            .await;
                    });
                }
            })
        };
        Endpoint {
            url: format!("http://127.0.0.1:{port}/hook"),
            received,
            task,
        }
    }

    /// What it got so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free loopback port, not listened on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while raw.len() < head_end + length {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        headers,
        body: String::from_utf8_lossy(&raw[head_end..]).to_string(),
    })
}
