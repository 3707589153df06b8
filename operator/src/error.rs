//! The operator's error type.

/// Everything that can fail in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),

    /// The spec is valid for the schema but cannot be turned into children.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// An object could not be (de)serialized.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),

    /// The object lacks metadata the operator relies on (name, namespace, uid).
    #[error("object is missing {0}")]
    MissingMetadata(&'static str),

    /// A generated manifest (CRD, RBAC) could not be rendered as YAML.
    #[error("rendering {0}")]
    Render(String),

    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(String),

    /// The alerts backend's scale-down timer could not apply its decision.
    #[error("alerts autoscaling: {0}")]
    AlertScaling(String),
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Short label for the `error` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Serde(_) => "serde",
            Self::MissingMetadata(_) => "missing_metadata",
            Self::Render(_) => "render",
            Self::Lease(_) => "lease",
            Self::AlertScaling(_) => "alert_scaling",
        }
    }
}
