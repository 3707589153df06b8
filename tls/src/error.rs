//! The crate's one error type: which file could not be used, and why.

use std::path::PathBuf;

/// What went wrong loading TLS material or binding a listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    /// rustls refused the material (e.g. the key does not belong to the certificate).
    #[error("{what}: {source}")]
    Rustls { what: String, source: rustls::Error },
    /// The listening socket could not be opened.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}
