//! The HTTP layer's one error type and its OpenAI-shaped rendering.
//!
//! Every failure a client can see goes through [`ApiError`], whose single
//! [`IntoResponse`] impl writes the status code and the body OpenAI clients parse:
//! `{"error": {"message", "type", "param", "code"}}`. Engine and core errors are
//! mapped here, in one place, so the same condition always gets the same status:
//!
//! | condition                                   | status | `type`                  |
//! |---------------------------------------------|--------|-------------------------|
//! | bad JSON, wrong types, invalid params       | 400    | `invalid_request_error` |
//! | prompt longer than `--max-model-len`        | 400    | `invalid_request_error` |
//! | missing or wrong bearer key                 | 401    | `invalid_request_error` |
//! | unknown model                               | 404    | `invalid_request_error` |
//! | body over the size limit                    | 413    | `invalid_request_error` |
//! | queue full / engine stopped (`Retry-After`) | 503    | `server_error`          |

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

/// Seconds a client is told to wait when the waiting queue is full.
const RETRY_AFTER_OVERLOADED_S: u32 = 1;
/// Seconds a client is told to wait when the engine loop is not running.
const RETRY_AFTER_ENGINE_DEAD_S: u32 = 5;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    retry_after_s: Option<u32>,
}

/// The JSON body: `{"error": {...}}`.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400: the request is malformed or a parameter is out of range.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    /// 400 naming the offending request field.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::invalid(message)
        }
    }

    /// 401: no `Authorization: Bearer` header, or a key that does not match `--api-key`.
    pub fn unauthorized(provided: Option<&str>) -> Self {
        let message = match provided {
            None => "You didn't provide an API key. You need to provide your API key in an \
                     Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                .to_owned(),
            Some(key) => format!("Incorrect API key provided: {}.", redact_key(key)),
        };
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: Some("invalid_api_key"),
            ..Self::invalid(message)
        }
    }

    /// 404: the request names a model this server does not serve.
    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            param: Some("model".to_owned()),
            code: Some("model_not_found"),
            ..Self::invalid(format!("The model `{model}` does not exist."))
        }
    }

    /// 404 for a path that is not a route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            ..Self::invalid(message)
        }
    }

    /// 413: the body is larger than the server accepts.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..Self::invalid(format!(
                "The request body is larger than {limit_bytes} bytes."
            ))
        }
    }

    /// 503 with `Retry-After`: too many requests are already waiting.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("overloaded"),
            retry_after_s: Some(RETRY_AFTER_OVERLOADED_S),
        }
    }

    /// 503 with `Retry-After`: the engine loop has stopped.
    pub fn engine_dead() -> Self {
        Self {
            code: Some("engine_unavailable"),
            retry_after_s: Some(RETRY_AFTER_ENGINE_DEAD_S),
            ..Self::overloaded("The inference engine is not running; try again later.")
        }
    }

    /// 500: a bug or an unexpected failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after_s: None,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body, for callers that must embed the error in a stream (SSE).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or(serde_json::Value::Null)
    }

    fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = ?self.code, "{}", self.message);
        } else {
            tracing::debug!(status = self.status.as_u16(), "{}", self.message);
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<candela_core::Error> for ApiError {
    fn from(err: candela_core::Error) -> Self {
        use candela_core::Error as E;
        match &err {
            E::QueueFull { .. } => Self::overloaded(err.to_string()),
            E::TooLong { .. } | E::EmptyPrompt => Self::invalid_param("prompt", err.to_string()),
            E::InvalidParams(_) => Self::invalid(err.to_string()),
            E::DuplicateRequest(_) | E::Config(_) => Self::internal(err.to_string()),
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidRequest {
                param: Some(param),
                message,
            } => Self::invalid_param(param, message),
            Error::InvalidRequest {
                param: None,
                message,
            } => Self::invalid(message),
            Error::Rejected(core) => core.into(),
            Error::EngineDead => Self::engine_dead(),
            err @ Error::LoraNotFound(_) => Self {
                code: Some("NotFoundError"),
                ..Self::not_found(err.to_string())
            },
            other => Self::internal(other.to_string()),
        }
    }
}

/// Shows only the ends of a key, as OpenAI does (`sk-ab***yz`).
fn redact_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "***".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}***{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(err: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn renders_openai_shape() {
        let (status, retry, body) =
            body_json(ApiError::invalid_param("n", "n must be at least 1")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(retry, None);
        assert_eq!(body["error"]["message"], "n must be at least 1");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "n");
        assert!(body["error"]["code"].is_null());
    }

    #[tokio::test]
    async fn model_not_found_is_404_with_openai_message() {
        let (status, _, body) = body_json(ApiError::model_not_found("gpt-9")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body["error"]["message"],
            "The model `gpt-9` does not exist."
        );
        assert_eq!(body["error"]["code"], "model_not_found");
    }

    #[tokio::test]
    async fn queue_full_and_dead_engine_are_503_with_retry_after() {
        let err: ApiError = Error::Rejected(candela_core::Error::QueueFull { waiting: 7 }).into();
        let (status, retry, body) = body_json(err).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("7 requests")
        );
        let (status, retry, _) = body_json(Error::EngineDead.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("5"));
    }

    #[test]
    fn core_errors_map_to_client_errors() {
        let too_long = candela_core::Error::TooLong {
            max_model_len: 8,
            requested: 10,
            prompt: 9,
            max_tokens: 1,
        };
        let err = ApiError::from(too_long);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.message().contains("maximum context length is 8"));
        let err = ApiError::from(candela_core::Error::InvalidParams("top_p bad".into()));
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ApiError::from(candela_core::Error::EmptyPrompt).status(),
            StatusCode::BAD_REQUEST
        );
        let err = ApiError::from(candela_core::Error::Config("x".into()));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn unauthorized_redacts_the_key() {
        let (status, _, body) = body_json(ApiError::unauthorized(Some("sk-secret-key-123"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("sk-***23"), "{msg}");
        assert!(!msg.contains("secret"));
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let (_, _, body) = body_json(ApiError::unauthorized(None)).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("didn't provide")
        );
    }
}
