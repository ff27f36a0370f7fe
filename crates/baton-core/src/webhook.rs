//! Webhooks of a build's end, as [Standard Webhooks](https://www.standardwebhooks.com/) has them:
//! the payload, its signature, the secrets that sign it, and which job URLs are allowed.
//!
//! Signing is written here, not taken from a crate: it is one HMAC-SHA256 over
//! `<id>.<timestamp>.<body>` (with the well-kept `hmac` and `sha2` crates), and the only crate for
//! the scheme pulls in an HTTP stack this crate must not have.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The longest `webhook_url` a job may carry.
pub const MAX_URL_LEN: usize = 2048;

/// The most bytes of a build's answer a webhook carries; the whole of it is in the ledger.
pub const WEBHOOK_OUTPUT_BYTES: usize = 16 * 1024;

/// A webhook's body: `{"type", "timestamp", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    /// `build.completed`, `build.failed`, `build.cancelled` or `build.dead_lettered`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the build ended.
    pub timestamp: DateTime<Utc>,
    /// The build.
    pub data: BuildEnd,
}

/// What a webhook says of the build that ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildEnd {
    /// The build.
    pub build_id: String,
    /// Its project.
    pub project_id: String,
    /// Its version.
    pub version_id: String,
    /// Its kind.
    pub kind: String,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The session the project's next job resumes.
    pub session_id: Option<String>,
    /// The build's answer, at most [`WEBHOOK_OUTPUT_BYTES`].
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Tokens of all its runs.
    pub usage: Usage,
    /// What all its runs cost, as the CLI reported it.
    pub cost_usd: f64,
    /// When it was enqueued.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Tokens of a build's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cached input tokens read.
    pub cache_read_input_tokens: i64,
    /// Cached input tokens written.
    pub cache_creation_input_tokens: i64,
}

/// The keys webhooks are signed with (`BATON_WEBHOOK_SECRET`, comma-separated `whsec_<base64>`):
/// each signs every webhook, so a receiver can rotate from one to the next.
#[derive(Clone, Default)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        write!(f, "Secrets({} set)", self.0.len())
    }
}

impl Secrets {
    /// Reads `whsec_<base64>` secrets, comma-separated; blank ones are left out.
    pub fn parse(text: &str) -> Result<Secrets, String> {
        let mut keys = Vec::new();
        for (i, secret) in text.split(',').map(str::trim).enumerate() {
            if secret.is_empty() {
                continue;
            }
            let key = secret
                .strip_prefix("whsec_")
                .and_then(|b| STANDARD.decode(b).ok())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    format!(
                        "secret {} is not whsec_ followed by base64 of the key",
                        i + 1
                    )
                })?;
            keys.push(key);
        }
        Ok(Secrets(keys))
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`
    /// for each key, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        self.0
            .iter()
            .map(|key| {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Why a webhook URL is not one Baton sends to: it must be `http://` or `https://`, at most
/// [`MAX_URL_LEN`] bytes, without spaces or control characters.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("must start with https:// or http://".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!("is longer than {MAX_URL_LEN} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("has a space or a control character".into());
    }
    Ok(())
}

/// Whether a job's own `webhook_url` may be used: it starts with one of `allow`
/// (`BATON_WEBHOOK_ALLOW`); none is allowed when `allow` is empty.
pub fn check_allowed(url: &str, allow: &[String]) -> Result<(), String> {
    check_url(url)?;
    if allow
        .iter()
        .any(|prefix| !prefix.is_empty() && url.starts_with(prefix.as_str()))
    {
        Ok(())
    } else if allow.is_empty() {
        Err("is not allowed: BATON_WEBHOOK_ALLOW names no prefix".into())
    } else {
        Err("does not start with any prefix of BATON_WEBHOOK_ALLOW".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_hmac_of_id_timestamp_and_body_with_each_key() {
        // The Standard Webhooks reference vector.
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secrets.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let two = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_c2Vjb25k").unwrap();
        let signed = two.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert!(signed.starts_with("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,"));
    }

    #[test]
    fn a_secret_that_is_not_whsec_base64_is_refused_without_being_shown() {
        let err = Secrets::parse("whsec_ok0=,hunter2").unwrap_err();
        assert!(err.contains("secret 2"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(
            format!("{:?}", Secrets::parse("whsec_a2V5").unwrap()),
            "Secrets(1 set)"
        );
    }

    #[test]
    fn a_job_url_must_start_with_an_allowed_prefix() {
        let allow = vec!["https://hooks.example.com/".to_string()];
        assert!(check_allowed("https://hooks.example.com/baton", &allow).is_ok());
        assert!(check_allowed("https://hooks.example.com.evil/x", &allow).is_err());
        assert!(check_allowed("https://hooks.example.com/x", &[]).is_err());
        assert!(check_allowed("ftp://hooks.example.com/", &allow).is_err());
        assert!(check_url("https://a.example/ b").is_err());
    }
}
