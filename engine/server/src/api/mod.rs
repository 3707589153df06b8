//! The OpenAI-compatible HTTP API of `candela serve` (axum).
//!
//! Routes (vLLM's set): `POST /v1/completions`, `POST /v1/chat/completions`,
//! `GET /v1/models`, `GET /health`, `GET /version`, `POST /tokenize`,
//! `POST /detokenize`; with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`
//! also `POST /v1/load_lora_adapter` and `POST /v1/unload_lora_adapter` ([`lora`]).
//! A request's `model` names a served model name or a LoRA adapter. When `--api-key` or
//! `--api-key-tiers` is set, every `/v1/*` route requires `Authorization: Bearer <key>`
//! ([`auth`]; a tier file's key also bounds its requests' `service_tier`); the others stay
//! open, as in vLLM, so probes and scrapers need no secret. Bodies are limited to [`MAX_BODY_BYTES`] (413 above);
//! a prompt that fits the body but not `--max-model-len` is tokenized and then
//! refused with a 400.
//!
//! The HTTP side sees one [`crate::engine::RequestStream`] per sequence and
//! nothing else of the engine; see [`generate`] for how streams are owned so that a
//! client hang-up aborts its requests.

pub mod auth;
mod chat;
mod completions;
pub mod error;
pub mod generate;
mod lora;
pub mod protocol;
mod tokenize;
mod tools;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tokenizers::Tokenizer;

pub use error::ApiError;
pub use generate::unix_now;

use candela_contract::ports;

use crate::engine::EngineClient;
use crate::frontend::structured::Compiler;
use crate::frontend::tool_calls::ToolParser;
use protocol::{ModelCard, ModelList};

/// Largest request body accepted (413 above). Big enough for a prompt far past any
/// context length, so "too long" is answered by the tokenizer count, not the socket.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Header a client may set to choose the request id (vLLM's spelling).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One chat message as the chat template sees it (content parts already joined;
/// tool-call arguments parsed into objects, as Hugging Face templates expect).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// What a render needs besides the messages.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TemplateOptions {
    #[serde(skip)]
    pub add_generation_prompt: bool,
    /// `tools` as the template sees them (OpenAI's tool objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<protocol::Tool>>,
    /// `chat_template_kwargs`: more template variables.
    #[serde(flatten)]
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

/// Renders messages into a prompt. An `Err` carries a message for the client (a 400).
pub type ChatTemplate =
    dyn Fn(&[ChatMessage], &TemplateOptions) -> Result<String, String> + Send + Sync;

/// What every handler can reach. Cheap to share: the router wraps it in an `Arc`.
pub struct AppState {
    pub engine: EngineClient,
    pub tokenizer: Arc<Tokenizer>,
    /// Compiles structured-output constraints for this tokenizer.
    pub grammars: Arc<Compiler>,
    /// `--tool-call-parser` when `--enable-auto-tool-choice` is on.
    pub auto_tool_parser: Option<ToolParser>,
    pub chat_template: Arc<ChatTemplate>,
    /// `--served-model-name` values; the first is the default and the one `/v1/models` lists first.
    pub served_model_names: Vec<String>,
    /// `--max-model-len`: prompt plus output tokens.
    pub max_model_len: usize,
    /// `--api-key` and `--api-key-tiers`: when set, `/v1/*` requires one as a bearer token.
    pub api_keys: crate::frontend::keys::ApiKeys,
    /// What `/v1/models` reports as `root` (the model path).
    pub model_root: String,
    /// Unix time the server started (`/v1/models` `created`).
    pub created: u64,
    /// The LoRA adapters, with `--enable-lora`.
    pub loras: Option<Arc<crate::lora::LoraRegistry>>,
    /// `VLLM_ALLOW_RUNTIME_LORA_UPDATING`: the load/unload endpoints exist.
    pub runtime_lora_updating: bool,
}

impl AppState {
    /// The first `--served-model-name`: the default `model`, and LoRA adapters' parent.
    pub fn base_model_name(&self) -> &str {
        self.served_model_names.first().map_or("", String::as_str)
    }

    /// The served name or LoRA adapter a request addressed; absent means the default.
    ///
    /// # Errors
    /// 404 when the name is neither served here nor a loaded adapter.
    pub fn resolve_model(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match requested {
            None | Some("") => Ok(self.base_model_name().to_owned()),
            Some(name) if self.served_model_names.iter().any(|n| n == name) => Ok(name.to_owned()),
            Some(name) if self.loras.as_ref().is_some_and(|l| l.contains(name)) => {
                Ok(name.to_owned())
            }
            Some(name) => Err(ApiError::model_not_found(name)),
        }
    }

    /// The adapter a resolved `model` names (`None`: a base model name).
    ///
    /// # Errors
    /// 404 when the adapter was unloaded since the name was resolved; 500 when an
    /// evicted adapter's files can no longer be read.
    pub async fn adapter(&self, model: &str) -> Result<Option<crate::lora::LoraHandle>, ApiError> {
        if self.served_model_names.iter().any(|n| n == model) {
            return Ok(None);
        }
        let Some(loras) = &self.loras else {
            return Ok(None);
        };
        match loras.handle(model).await? {
            Some(handle) => Ok(Some(handle)),
            None => Err(ApiError::model_not_found(model)),
        }
    }
}

/// Builds the HTTP router over `state`.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    let mut v1 = Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route(ports::MODELS_PATH, get(list_models))
        .route("/v1/models/{*model}", get(get_model));
    if state.loras.is_some() && state.runtime_lora_updating {
        v1 = v1
            .route(ports::LOAD_LORA_ADAPTER_PATH, post(lora::load))
            .route(ports::UNLOAD_LORA_ADAPTER_PATH, post(lora::unload));
    }
    let v1 = v1.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_api_key,
    ));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A JSON body whose errors are OpenAI-shaped 400s naming the bad field (413 when
/// too large). Unlike axum's `Json` it does not insist on a content type: clients
/// that post JSON as `text/plain` or without a header are served, as vLLM does.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(MAX_BODY_BYTES)
            } else {
                ApiError::invalid(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a body, turning serde's errors into messages that name the field.
///
/// # Errors
/// 400 for malformed JSON or a field of the wrong type.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would accept `[...]` as a struct written positionally; requests are objects.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid JSON body: expected a JSON object.",
            ));
        }
        None => return Err(ApiError::invalid("Invalid JSON body: the body is empty.")),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = inner.to_string();
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            // The path usually ends in the unknown field already; inside an internally
            // tagged enum (`response_format`) it stops at the enum's own field.
            let param = if path == "." {
                field.to_owned()
            } else if path == field || path.ends_with(&format!(".{field}")) {
                path
            } else {
                format!("{path}.{field}")
            };
            return ApiError::invalid_param(
                &param,
                format!(
                    "Unknown field `{param}`: this server does not support it, and a field \
                     that could change the output is refused rather than ignored."
                ),
            );
        }
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::invalid(format!("Invalid JSON body: {inner}"))
        } else {
            ApiError::invalid_param(&path, format!("Invalid value for `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("Invalid JSON body: {e}")))?;
    Ok(value)
}

async fn list_models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let mut data: Vec<ModelCard> = state
        .served_model_names
        .iter()
        .map(|name| model_card(&state, name))
        .collect();
    let adapters = state.loras.as_ref().map(|l| l.cards()).unwrap_or_default();
    data.extend(adapters.into_iter().map(|a| adapter_card(&state, a)));
    Json(ModelList {
        object: "list",
        data,
    })
}

/// `GET /v1/models/{model}` (OpenAI's retrieve-model call).
async fn get_model(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let name = state.resolve_model(Some(&model))?;
    let adapter = state
        .loras
        .as_ref()
        .and_then(|l| l.cards().into_iter().find(|a| a.name == name));
    Ok(Json(match adapter {
        Some(a) => adapter_card(&state, a),
        None => model_card(&state, &name),
    }))
}

/// An adapter's card: vLLM's `root` (its files) and `parent` (the base model).
fn adapter_card(state: &AppState, a: crate::lora::AdapterCard) -> ModelCard {
    ModelCard {
        root: a.root,
        parent: Some(a.parent),
        ..model_card(state, &a.name)
    }
}

fn model_card(state: &AppState, name: &str) -> ModelCard {
    ModelCard {
        id: name.to_owned(),
        object: "model",
        created: state.created,
        owned_by: "candela",
        root: state.model_root.clone(),
        parent: None,
        max_model_len: state.max_model_len,
    }
}

/// The id of a request: the client's `X-Request-Id` when it sent a sane one (so
/// its logs and ours line up, as vLLM does), else a fresh UUID.
pub fn request_id(prefix: &str, headers: &HeaderMap) -> String {
    let client_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
    match client_id {
        Some(id) => format!("{prefix}-{id}"),
        None => format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// Sets the `X-Request-Id` response header: the client's own header unchanged when
/// it sent one (as vLLM's request-id middleware does), else the response's `id`.
pub fn with_request_id(mut response: Response, headers: &HeaderMap, id: &str) -> Response {
    let value = match headers.get(REQUEST_ID_HEADER) {
        Some(sent) => Some(sent.clone()),
        None => axum::http::HeaderValue::from_str(id).ok(),
    };
    if let Some(value) = value {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// 200 while the engine thread runs, 503 once it has stopped (so probes restart the pod).
async fn health(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.engine.is_alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "No route for {} {}.",
        req.method(),
        req.uri().path()
    ))
}

#[cfg(test)]
mod tests;
