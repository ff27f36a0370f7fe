//! Delivering the webhook outbox: every replica claims due deliveries from the ledger
//! (`Ledger::claim_webhooks`), signs each as Standard Webhooks says, and POSTs it. A 2xx delivers
//! it; anything else is tried again with exponential backoff and jitter until
//! `BATON_WEBHOOK_MAX_AGE`, then given up. It runs beside the jobs and never delays one.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use baton_core::webhook::{Secrets, check_allowed, check_url};
use baton_ledger::Ledger;
use baton_ledger::webhooks::Due;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// How often the outbox is looked at for due deliveries.
const POLL: Duration = Duration::from_millis(500);
/// Most deliveries one replica attempts at once.
const BATCH: i64 = 16;
/// How often the oldest pending delivery's age is measured for the metric.
const AGE_EVERY: Duration = Duration::from_secs(5);

/// Where and how webhooks go (`BATON_WEBHOOK_*`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `BATON_WEBHOOK_URL`: where every build's end goes.
    pub url: Option<String>,
    /// `BATON_WEBHOOK_SECRET`: the keys each webhook is signed with.
    pub secrets: Secrets,
    /// `BATON_WEBHOOK_ALLOW`: prefixes a job's own `webhook_url` must start with.
    pub allow: Vec<String>,
    /// `BATON_WEBHOOK_MAX_AGE`: how long a delivery is tried before it is given up.
    pub max_age: Duration,
    /// `BATON_WEBHOOK_TIMEOUT`: how long one attempt may take.
    pub timeout: Duration,
}

impl WebhookSettings {
    /// Checks the settings together: a URL that can be sent to, and a secret wherever webhooks
    /// can be sent at all.
    pub fn check(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            check_url(url).map_err(|why| format!("BATON_WEBHOOK_URL {why}"))?;
        }
        if (self.url.is_some() || !self.allow.is_empty()) && self.secrets.is_empty() {
            return Err(
                "BATON_WEBHOOK_SECRET is required when BATON_WEBHOOK_URL or BATON_WEBHOOK_ALLOW is set: every webhook is signed"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered(u16),
    Refused(Option<u16>, String),
    /// Never to be sent: a job's own URL this deployment does not allow.
    NotAllowed(String),
}

/// Delivers due webhooks until `shutdown`.
pub(crate) async fn deliver_loop(
    ledger: Ledger,
    settings: Arc<WebhookSettings>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot make the webhook client; no webhooks are delivered");
            return;
        }
    };
    // A claim lasts one attempt and a margin: past it, another replica may try the delivery.
    let lease = settings.timeout + Duration::from_secs(10);
    let mut measured = tokio::time::Instant::now() - AGE_EVERY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => return,
        }
        if settings.url.is_none() {
            match ledger.skip_default_webhooks().await {
                Ok(0) => {}
                Ok(n) => {
                    metrics
                        .webhook_deliveries
                        .get_or_create(&crate::metrics::WebhookLabels {
                            outcome: "skipped".into(),
                        })
                        .inc_by(n);
                }
                Err(e) => warn!(error = %e, "could not skip webhooks without a URL"),
            }
        }
        if measured.elapsed() >= AGE_EVERY {
            measured = tokio::time::Instant::now();
            if let Ok(age) = ledger.oldest_pending_webhook_secs().await {
                metrics.webhook_oldest_pending.set(age);
            }
        }
        let due = match ledger.claim_webhooks(BATCH, lease).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "could not claim webhook deliveries");
                continue;
            }
        };
        let attempts = due
            .into_iter()
            .map(|d| deliver(&ledger, &client, &settings, &metrics, d));
        futures_util::future::join_all(attempts).await;
    }
}

/// One attempt of one delivery, and its record.
async fn deliver(
    ledger: &Ledger,
    client: &reqwest::Client,
    settings: &WebhookSettings,
    metrics: &Metrics,
    due: Due,
) {
    let attempt = attempt(ledger, client, settings, &due).await;
    let (delivered, status, error) = match &attempt {
        Attempt::Delivered(status) => (true, Some(i32::from(*status)), None),
        Attempt::Refused(status, why) => (false, status.map(i32::from), Some(why.as_str())),
        Attempt::NotAllowed(why) => (false, None, Some(why.as_str())),
    };
    let age = (chrono::Utc::now() - due.since)
        .to_std()
        .unwrap_or_default();
    let retry_at = match attempt {
        Attempt::Delivered(_) | Attempt::NotAllowed(_) => None,
        Attempt::Refused(..) if age >= settings.max_age => None,
        Attempt::Refused(..) => Some(chrono::Utc::now() + backoff(due.attempts)),
    };
    let outcome = match (delivered, retry_at) {
        (true, _) => "delivered",
        (false, Some(_)) => "retried",
        (false, None) => "failed",
    };
    metrics.webhook(outcome);
    match outcome {
        "delivered" => {
            info!(webhook = %due.id, build_id = %due.build_id, event = %due.event_type, attempts = due.attempts, "webhook delivered")
        }
        "retried" => {
            warn!(webhook = %due.id, build_id = %due.build_id, error = error.unwrap_or(""), attempts = due.attempts, "webhook not delivered; trying again")
        }
        _ => {
            warn!(webhook = %due.id, build_id = %due.build_id, error = error.unwrap_or(""), attempts = due.attempts, "webhook given up")
        }
    }
    if let Err(e) = ledger
        .webhook_attempted(&due.id, delivered, status, error, retry_at)
        .await
    {
        // The claim's lease runs out and the delivery is tried again: at least once, never lost.
        warn!(error = %e, webhook = %due.id, "could not record a webhook attempt");
    }
}

async fn attempt(
    ledger: &Ledger,
    client: &reqwest::Client,
    settings: &WebhookSettings,
    due: &Due,
) -> Attempt {
    let url = match (&due.url, &settings.url) {
        (Some(own), _) => match check_allowed(own, &settings.allow) {
            Ok(()) => own.clone(),
            Err(why) => return Attempt::NotAllowed(format!("the job's webhook_url {why}")),
        },
        (None, Some(url)) => url.clone(),
        (None, None) => return Attempt::Refused(None, "BATON_WEBHOOK_URL is not set".into()),
    };
    let body = match &due.body {
        Some(body) => body.clone(),
        None => {
            let made = ledger
                .webhook_payload(&due.build_id, &due.event_type)
                .await
                .map(|p| serde_json::to_string(&p).expect("a payload serialises"));
            let kept = match made {
                Ok(body) => ledger.keep_webhook_body(&due.id, &body).await,
                Err(e) => Err(e),
            };
            match kept {
                Ok(body) => body,
                Err(e) => return Attempt::Refused(None, format!("ledger: {e}")),
            }
        }
    };
    let timestamp = chrono::Utc::now().timestamp();
    let sent = client
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", &due.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            settings.secrets.sign(&due.id, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Attempt::Delivered(r.status().as_u16()),
        Ok(r) => Attempt::Refused(
            Some(r.status().as_u16()),
            format!("the endpoint answered {}", r.status()),
        ),
        // Without the URL: a job's own may carry a token in its query.
        Err(e) => Attempt::Refused(None, describe(&e)),
    }
}

/// Why a request failed, without its URL.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    format!("the request {what}")
}

/// The wait before attempt `attempts + 1`: from 2 s, doubling, with jitter, at most 1 h.
fn backoff(attempts: i32) -> chrono::Duration {
    let wait = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(2))
        .with_max_delay(Duration::from_secs(3600))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(usize::try_from(attempts.max(1) - 1).unwrap_or(0))
        .unwrap_or(Duration::from_secs(3600));
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_comes_within_seconds_and_later_ones_back_off_to_an_hour() {
        let first = backoff(1).num_milliseconds();
        assert!((2000..=4000).contains(&first), "{first}");
        assert!(backoff(5).num_seconds() >= 32);
        assert!(backoff(60).num_seconds() <= 7200);
    }

    #[test]
    fn webhooks_need_a_secret_wherever_they_can_be_sent() {
        let settings = WebhookSettings {
            url: Some("https://hooks.example.com/".into()),
            secrets: Secrets::default(),
            allow: Vec::new(),
            max_age: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        };
        assert!(
            settings
                .check()
                .unwrap_err()
                .contains("BATON_WEBHOOK_SECRET")
        );
        let bad = WebhookSettings {
            url: Some("ftp://x".into()),
            secrets: Secrets::parse("whsec_a2V5").unwrap(),
            ..settings.clone()
        };
        assert!(bad.check().unwrap_err().contains("BATON_WEBHOOK_URL"));
        let off = WebhookSettings {
            url: None,
            ..settings
        };
        assert!(off.check().is_ok());
    }
}
