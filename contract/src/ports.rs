//! Ports, container names and probe paths of a Candela pod.

/// OpenAI-compatible HTTP API, `/health`, `/metrics` of the engine (`candela serve --port`).
pub const HTTP: u16 = 8000;
/// The engine's gRPC API (`--grpc-port`): Generate, Health, WatchStats, profiling.
pub const GRPC: u16 = 50051;
/// The sidecar's `/metrics` and `/profiles` (`candela sidecar --listen`).
pub const METRICS: u16 = 9090;

/// Name of the engine container (`candela serve`) in the pods the operator creates.
pub const ENGINE_CONTAINER: &str = "engine";
/// Name of the sidecar container (`candela sidecar`).
pub const SIDECAR_CONTAINER: &str = "sidecar";

/// Named container ports (what Services and ServiceMonitors refer to).
pub const HTTP_PORT_NAME: &str = "http";
/// See [`HTTP_PORT_NAME`].
pub const GRPC_PORT_NAME: &str = "grpc";
/// See [`HTTP_PORT_NAME`].
pub const METRICS_PORT_NAME: &str = "metrics";

/// The engine's liveness/readiness path: 200 once the model is loaded and the engine runs.
pub const HEALTH_PATH: &str = "/health";
/// Prometheus exposition path of the engine and the sidecar.
pub const METRICS_PATH: &str = "/metrics";

/// The engine's model list (OpenAI's; LoRA adapters carry a `parent`), which the sidecar's
/// LoRA sync reads.
pub const MODELS_PATH: &str = "/v1/models";
/// vLLM's runtime LoRA endpoints (with `VLLM_ALLOW_RUNTIME_LORA_UPDATING`), which the
/// sidecar's LoRA sync calls.
pub const LOAD_LORA_ADAPTER_PATH: &str = "/v1/load_lora_adapter";
/// See [`LOAD_LORA_ADAPTER_PATH`].
pub const UNLOAD_LORA_ADAPTER_PATH: &str = "/v1/unload_lora_adapter";
