//! vLLM's `POST /tokenize` and `POST /detokenize`: the server's own tokenizer and
//! chat template, exposed so clients can count tokens exactly as generation will.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::chat::to_template_messages;
use super::protocol::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use super::{ApiError, ApiJson, AppState, TemplateOptions};
use crate::frontend::validate;

/// `{prompt}` or `{messages}` → `{tokens, count, max_model_len}`.
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<TokenizeResponse>, ApiError> {
    state.resolve_model(req.model.as_deref())?;
    let (text, default_special) = match (req.prompt, req.messages) {
        (Some(prompt), None) => (prompt, true),
        (None, Some(messages)) => {
            let messages = to_template_messages(&messages)?;
            let options = TemplateOptions {
                add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
                tools: req.tools,
                kwargs: serde_json::Map::new(),
            };
            let rendered = (state.chat_template)(&messages, &options).map_err(|e| {
                ApiError::invalid_param("messages", format!("Chat template error: {e}"))
            })?;
            (rendered, false)
        }
        _ => {
            return Err(ApiError::invalid(
                "Exactly one of `prompt` or `messages` must be given.",
            ));
        }
    };
    let add_special_tokens = req.add_special_tokens.unwrap_or(default_special);
    let tokens = validate::tokenize(&state.tokenizer, text, add_special_tokens).await?;
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len: state.max_model_len,
        tokens,
    }))
}

/// `{tokens}` → `{prompt}`.
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    state.resolve_model(req.model.as_deref())?;
    validate::check_token_ids(state.tokenizer.get_vocab_size(true), &req.tokens)?;
    let prompt = state
        .tokenizer
        .decode(&req.tokens, false)
        .map_err(|e| ApiError::internal(format!("detokenization failed: {e}")))?;
    Ok(Json(DetokenizeResponse { prompt }))
}
