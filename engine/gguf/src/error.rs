//! The GGUF reader's one error type. Every malformed input ends here: the reader
//! never panics on bytes it is given.

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The input ends inside the header.
    #[error("truncated: the header ends early")]
    Truncated,
    /// The first four bytes are not `GGUF`.
    #[error("starts with \"{}\", not \"GGUF\"", .0.escape_ascii())]
    BadMagic([u8; 4]),
    /// A version this reader does not know (1, 2 and 3 exist).
    #[error("unsupported GGUF version {0} (1, 2 and 3 are read)")]
    UnsupportedVersion(u32),
    /// A field holds a value the format does not allow (unknown value type,
    /// a bool that is not 0 or 1, too many dimensions, arrays nested too deep).
    #[error("malformed GGUF header: {0}")]
    Malformed(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
