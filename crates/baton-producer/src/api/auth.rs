//! Bearer tokens (`BATON_API_TOKENS`): every `/v1` route needs one when any are set. Each is
//! compared in constant time, so an answer's timing says nothing of how much of a guess matched.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
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

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
}
