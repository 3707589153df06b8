//! The hub crate's error: one line each, naming the repository and what to do.

use std::path::PathBuf;

/// Everything that can stop a model from being found or fetched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hub does not know the repository, or hides it (private, no or wrong token).
    #[error("hf://{repo}: repository not found on {endpoint}{}", if *with_token {
        " (or the token cannot see it)"
    } else {
        " (if it is private, pass a token: --hf-token or HF_TOKEN)"
    })]
    RepoNotFound {
        repo: String,
        endpoint: String,
        with_token: bool,
    },
    /// The repository is gated and this account has not accepted its conditions.
    #[error("hf://{repo} is gated: accept its conditions at {endpoint}/{repo} while logged in, then pass that account's token{}", if *with_token {
        " (the token given has no access yet)"
    } else {
        " with --hf-token or HF_TOKEN"
    })]
    Gated {
        repo: String,
        endpoint: String,
        with_token: bool,
    },
    /// 401 for a token the hub does not accept.
    #[error("hf://{repo}: the hub refused the token (401 {message}); check --hf-token / HF_TOKEN")]
    BadToken { repo: String, message: String },
    /// 403: the token is valid but lacks access.
    #[error(
        "hf://{repo}: access denied (403 {message}); the token needs read access to this repository"
    )]
    Forbidden { repo: String, message: String },
    /// The branch, tag or commit does not exist.
    #[error("hf://{repo} has no revision `{revision}` (a branch, tag or commit)")]
    RevisionNotFound { repo: String, revision: String },
    /// A file listed for the revision is missing.
    #[error("hf://{repo}@{revision}: file {file} not found")]
    EntryNotFound {
        repo: String,
        revision: String,
        file: String,
    },
    /// Nothing in the repository matches what was asked for (a quantization, a GGUF file).
    #[error("hf://{repo}@{revision}: {problem}")]
    Selection {
        repo: String,
        revision: String,
        problem: String,
    },
    /// Offline (or the hub unreachable) and the revision is not complete in the cache.
    #[error("hf://{repo}@{revision} is not in the cache {}: {reason}", cache.display())]
    NotCached {
        repo: String,
        revision: String,
        cache: PathBuf,
        reason: String,
    },
    /// The hub (or mirror) could not be reached and nothing usable is cached.
    #[error(
        "cannot reach the Hugging Face Hub at {endpoint} ({detail}); set HF_ENDPOINT for a mirror or HF_HUB_OFFLINE=1 to serve from the cache"
    )]
    Unreachable { endpoint: String, detail: String },
    /// Any other HTTP failure.
    #[error("{url}: HTTP {status} {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    /// A download stopped too often to finish; the partial file stays for the next start.
    #[error(
        "downloading hf://{repo}/{file} failed after {attempts} attempts at {done} of {total} bytes ({detail}); the next start resumes it"
    )]
    Interrupted {
        repo: String,
        file: String,
        attempts: u32,
        done: u64,
        total: u64,
        detail: String,
    },
    /// The downloaded bytes do not match the hub's size or hash; the partial file is gone.
    #[error(
        "hf://{repo}/{file}: downloaded {what} does not match the hub's ({got} != {want}); the partial file was removed"
    )]
    Verification {
        repo: String,
        file: String,
        what: &'static str,
        got: String,
        want: String,
    },
    /// The hub answered something its clients cannot use.
    #[error("{url}: unexpected answer from the hub: {detail}")]
    Protocol { url: String, detail: String },
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A flag that does not apply to this kind of model.
    #[error("{0}")]
    Usage(String),
}

/// Result with the hub crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
