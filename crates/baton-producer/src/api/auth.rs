//! Bearer tokens (`BATON_API_TOKENS`): every `/v1` route needs one when any are set, or the
//! dashboard's sign-in cookie, which is derived from one. Each is compared in constant time, so an
//! answer's timing says nothing of how much of a guess matched.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use utoipa::Modify;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::Api;
use super::error::ApiError;

/// The tokens the API takes.
#[derive(Clone, Default)]
pub struct Tokens(Vec<Vec<u8>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        write!(f, "Tokens({} set)", self.0.len())
    }
}

impl Tokens {
    /// The tokens, blank ones left out.
    pub fn new(tokens: &[String]) -> Tokens {
        Tokens(
            tokens
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(|t| t.as_bytes().to_vec())
                .collect(),
        )
    }

    /// Whether `given` is one of them. Every token is compared, whichever matches.
    pub fn accepts(&self, given: &[u8]) -> bool {
        self.0
            .iter()
            .fold(0u8, |any, t| any | t.as_slice().ct_eq(given).unwrap_u8())
            == 1
    }

    /// Whether no token is set (the API and dashboard are then open, on loopback only).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `value` is the sign-in cookie of one of the tokens.
    pub(crate) fn accepts_cookie(&self, value: &[u8]) -> bool {
        self.0.iter().fold(0u8, |any, t| {
            any | cookie_value(t).as_bytes().ct_eq(value).unwrap_u8()
        }) == 1
    }

    /// Whether `headers` carry the sign-in cookie of one of the tokens.
    pub(crate) fn signed_in(&self, headers: &HeaderMap) -> bool {
        sign_in_cookie(headers).is_some_and(|v| self.accepts_cookie(v))
    }
}

/// The sign-in cookie's name.
pub(crate) const COOKIE_NAME: &str = "baton_session";

/// The sign-in cookie's value for `token`: a keyed hash of it, so the cookie never holds the token.
pub(crate) fn cookie_value(token: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token).expect("HMAC takes any key");
    mac.update(b"baton dashboard sign-in v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sign-in cookie's value in `headers`, if any.
fn sign_in_cookie(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            pair.strip_prefix(COOKIE_NAME.as_bytes())?
                .strip_prefix(b"=")
        })
}

/// Lets a request through when it carries an accepted token, or when the API has none.
pub(crate) async fn require_token(
    State(api): State<Api>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let tokens = &api.inner.tokens;
    if tokens.is_empty() {
        return Ok(next.run(request).await);
    }
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(token) if tokens.accepts(token) => Ok(next.run(request).await),
        // The dashboard's pages read the API with their sign-in cookie (SameSite=Strict, so no
        // other site's page can send it).
        None if tokens.signed_in(request.headers()) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not one of BATON_API_TOKENS",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`",
        )),
    }
}

/// Declares the bearer scheme in the OpenAPI document.
pub(crate) struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_token_is_accepted() {
        let tokens = Tokens::new(&["alpha".into(), " ".into(), "beta".into()]);
        assert!(tokens.accepts(b"alpha"));
        assert!(tokens.accepts(b"beta"));
        assert!(!tokens.accepts(b"alph"));
        assert!(!tokens.accepts(b"alphabet"));
        assert!(!tokens.accepts(b""));
        assert_eq!(format!("{tokens:?}"), "Tokens(2 set)");
    }

    #[test]
    fn a_cookie_is_accepted_only_when_made_from_a_token() {
        let tokens = Tokens::new(&["alpha".into()]);
        let good = cookie_value(b"alpha");
        assert!(!good.contains("alpha"));
        assert!(tokens.accepts_cookie(good.as_bytes()));
        assert!(!tokens.accepts_cookie(cookie_value(b"beta").as_bytes()));
        assert!(!tokens.accepts_cookie(b"alpha"));
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            format!("x=1; {COOKIE_NAME}={good}").parse().unwrap(),
        );
        assert!(tokens.signed_in(&headers));
    }
}
