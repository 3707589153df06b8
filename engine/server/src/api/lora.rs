//! vLLM's runtime LoRA endpoints: `POST /v1/load_lora_adapter` and
//! `POST /v1/unload_lora_adapter`, routed only with `--enable-lora` and
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. Success is vLLM's plain-text sentence;
//! failures are OpenAI-shaped errors (400 for a bad or taken name or unreadable files,
//! 404 for unloading an unknown adapter).

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;

use super::{ApiError, ApiJson, AppState};

/// `POST /v1/load_lora_adapter`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadLoraAdapterRequest {
    pub lora_name: Option<String>,
    pub lora_path: Option<String>,
}

/// `POST /v1/unload_lora_adapter`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnloadLoraAdapterRequest {
    pub lora_name: Option<String>,
}

pub async fn load(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<LoadLoraAdapterRequest>,
) -> Result<String, ApiError> {
    let loras = state.loras.as_ref().ok_or_else(not_enabled)?;
    let (Some(name), Some(path)) = (
        req.lora_name.filter(|n| !n.is_empty()),
        req.lora_path.filter(|p| !p.is_empty()),
    ) else {
        return Err(ApiError::invalid(
            "Both 'lora_name' and 'lora_path' must be provided.",
        ));
    };
    if state.served_model_names.contains(&name) {
        return Err(ApiError::invalid_param(
            "lora_name",
            format!("'{name}' is the base model's name."),
        ));
    }
    loras.load(&name, &path, state.base_model_name()).await?;
    Ok(format!(
        "Success: LoRA adapter '{name}' added successfully."
    ))
}

pub async fn unload(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<UnloadLoraAdapterRequest>,
) -> Result<String, ApiError> {
    let loras = state.loras.as_ref().ok_or_else(not_enabled)?;
    let Some(name) = req.lora_name.filter(|n| !n.is_empty()) else {
        return Err(ApiError::invalid("'lora_name' needs to be provided."));
    };
    loras.unload(&name)?;
    tracing::info!(adapter = %name, "LoRA adapter unloaded");
    Ok(format!(
        "Success: LoRA adapter '{name}' removed successfully."
    ))
}

fn not_enabled() -> ApiError {
    ApiError::invalid("LoRA is not enabled (start the server with --enable-lora).")
}
