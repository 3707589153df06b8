//! The server crate's one error type: what a request can be refused with, and what
//! can stop `candela serve` or `candela sidecar` from starting.
//!
//! Each transport maps it to its own wire form in one place: HTTP to OpenAI's error
//! JSON ([`crate::api::ApiError`]), gRPC to a `tonic::Status` (`crate::grpc`), the
//! binary to one `error:` line.

/// Everything the server crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of range (HTTP 400, gRPC `INVALID_ARGUMENT`).
    #[error("{message}")]
    InvalidRequest {
        /// The request field at fault, when there is one.
        param: Option<&'static str>,
        message: String,
    },
    /// The core refused the request: a prompt that does not fit, a full queue, …
    #[error(transparent)]
    Rejected(#[from] candela_core::Error),
    /// No LoRA adapter has this name (HTTP 404, as vLLM's unload answers).
    #[error("The lora adapter '{0}' cannot be found.")]
    LoraNotFound(String),
    /// The engine loop has stopped (HTTP 503, gRPC `UNAVAILABLE`).
    #[error("The inference engine is not running; try again later.")]
    EngineDead,
    /// A failure on our side while serving a request (HTTP 500).
    #[error("{0}")]
    Internal(String),
    /// Flags or limits that cannot work together (checked before anything starts).
    #[error("{0}")]
    Config(String),
    /// The model could not be loaded or placed on its device.
    #[error("{context}: {source}")]
    Model {
        context: String,
        #[source]
        source: candela_model::Error,
    },
    /// The model source could not be resolved or downloaded.
    #[error(transparent)]
    Hub(#[from] candela_hub::Error),
    /// `candela bench`, `plan` or `doctor` failed.
    #[error(transparent)]
    Tool(#[from] candela_tools::Error),
    /// A profile was asked for but the server runs without `--profiler-dir`.
    #[error(
        "profiling is disabled: start the server with --profiler-dir (or VLLM_TORCH_PROFILER_DIR)"
    )]
    ProfilingDisabled,
    /// `stop_profile` without a profile running.
    #[error("no profile is running; POST /start_profile first")]
    NoProfileRunning,
    /// A stats snapshot from the engine lacks a part every engine sends.
    #[error("stats snapshot without `{0}`")]
    SnapshotMissing(&'static str),
    /// A snapshot histogram whose counts do not cover its bounds plus `+Inf`.
    #[error("histogram `{name}` has {counts} counts for {bounds} bounds (expected bounds + 1)")]
    SnapshotHistogram {
        name: &'static str,
        bounds: usize,
        counts: usize,
    },
    /// The sidecar cannot reach the engine's gRPC API.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The engine's gRPC API answered with an error.
    #[error("engine answered {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The engine's stats stream went quiet for this long.
    #[error("no snapshot for {0:?}")]
    Stalled(std::time::Duration),
    /// `--ssl-*` files that cannot be used, or a listener that cannot be bound.
    #[error("TLS: {0}")]
    Tls(#[from] candela_tls::Error),
    /// A socket, file or thread the process needs.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 400-class refusal naming the request field at fault.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            param: Some(param),
            message: message.into(),
        }
    }

    /// An I/O failure with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A model failure with what was being done.
    pub fn model(context: impl Into<String>, source: candela_model::Error) -> Self {
        Error::Model {
            context: context.into(),
            source,
        }
    }
}
