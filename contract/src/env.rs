//! Environment variables that cross process boundaries: what the operator sets in a pod and
//! the engine reads. Every `candela serve` flag also reads `CANDELA_<FLAG>` (see
//! [`crate::serve`]); the ones the operator fills from Secrets are named here.

/// The API key `--api-key` reads (filled from `spec.apiKeySecretRef`).
pub const API_KEY: &str = "CANDELA_API_KEY";
/// The sidecar's `--metrics-token` (filled from `spec.monitoring.metricsAuthSecretRef`).
pub const METRICS_TOKEN: &str = "CANDELA_SIDECAR_METRICS_TOKEN";
/// Where `/start_profile` writes traces (`--profiler-dir`).
pub const PROFILER_DIR: &str = "CANDELA_PROFILER_DIR";
/// vLLM's spelling of [`PROFILER_DIR`], honoured as a fallback.
pub const VLLM_PROFILER_DIR: &str = "VLLM_TORCH_PROFILER_DIR";

/// Hugging Face token (`--hf-token`), as the hub's own clients read it.
pub const HF_TOKEN: &str = "HF_TOKEN";
/// Root of the Hugging Face cache and token file (`$HF_HOME/hub`, `$HF_HOME/token`).
pub const HF_HOME: &str = "HF_HOME";
/// The hub cache itself (takes precedence over `$HF_HOME/hub`).
pub const HF_HUB_CACHE: &str = "HF_HUB_CACHE";
/// Base URL of the hub or a mirror (default `https://huggingface.co`).
pub const HF_ENDPOINT: &str = "HF_ENDPOINT";
/// `1` (or `true`/`yes`/`on`): never touch the network, serve from the cache.
pub const HF_HUB_OFFLINE: &str = "HF_HUB_OFFLINE";

/// vLLM's switch for `POST /v1/load_lora_adapter` and `/v1/unload_lora_adapter`: the
/// endpoints exist only when it is `True` (or `1`).
pub const ALLOW_RUNTIME_LORA_UPDATING: &str = "VLLM_ALLOW_RUNTIME_LORA_UPDATING";
