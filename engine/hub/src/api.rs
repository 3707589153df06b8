//! The hub's HTTP protocol as its own clients speak it: repository info with file
//! metadata, file metadata from a `HEAD` on the resolve URL, ranged downloads, and the
//! `X-Error-Code` / `X-Error-Message` headers mapped to one-line [`Error`]s.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, ETAG, HeaderMap, RANGE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use crate::{Error, HubOptions, Result};

/// A repository at one revision: its commit and files.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RepoInfo {
    pub sha: String,
    #[serde(default)]
    pub siblings: Vec<Sibling>,
}

/// One file of [`RepoInfo`] (`?blobs=true` adds size, blob id and LFS data).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Sibling {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default, rename = "blobId")]
    pub blob_id: Option<String>,
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

/// LFS pointer data of a large file.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Lfs {
    pub sha256: String,
    pub size: u64,
}

/// What a download is checked against: the etag names the blob and is its hash (sha256
/// for LFS files, the git blob sha1 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub etag: String,
    pub size: u64,
}

impl Sibling {
    /// The metadata `?blobs=true` gave, if complete.
    pub fn meta(&self) -> Option<FileMeta> {
        match (&self.lfs, &self.blob_id, self.size) {
            (Some(lfs), _, _) => Some(FileMeta {
                etag: lfs.sha256.clone(),
                size: lfs.size,
            }),
            (None, Some(id), Some(size)) => Some(FileMeta {
                etag: id.clone(),
                size,
            }),
            _ => None,
        }
    }
}

/// Where a request was going, for error messages.
pub(crate) struct Ctx<'a> {
    pub repo: &'a str,
    pub revision: &'a str,
    pub file: Option<&'a str>,
}

/// A client for one endpoint.
pub(crate) struct Hub {
    client: reqwest::Client,
    /// HEAD requests must not follow the resolve URL's redirect to the CDN: the hub's own
    /// headers (X-Linked-Etag, X-Linked-Size, X-Repo-Commit) are on the redirect.
    no_redirect: reqwest::Client,
    pub endpoint: String,
    with_token: bool,
}

impl Hub {
    /// # Errors
    /// When the HTTP client cannot be built (TLS roots).
    pub fn new(opts: &HubOptions) -> Result<Self> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &opts.token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                Error::Usage(
                    "the Hugging Face token contains characters a header cannot carry".into(),
                )
            })?;
            headers.insert(AUTHORIZATION, value);
        }
        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .user_agent(concat!(
                    "candela/",
                    env!("CARGO_PKG_VERSION"),
                    "; hf_hub-compatible"
                ))
                .default_headers(headers.clone())
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(60))
                .redirect(redirects)
                .build()
                .map_err(|e| Error::Unreachable {
                    endpoint: opts.endpoint.clone(),
                    detail: format!("building the HTTP client: {e}"),
                })
        };
        Ok(Self {
            client: build(reqwest::redirect::Policy::limited(10))?,
            no_redirect: build(reqwest::redirect::Policy::none())?,
            endpoint: opts.endpoint.clone(),
            with_token: opts.token.is_some(),
        })
    }

    /// `GET /api/models/{repo}/revision/{revision}?blobs=true`.
    ///
    /// # Errors
    /// Unreachable hub, or the hub's error for the repository / revision.
    pub async fn repo_info(&self, repo: &str, revision: &str) -> Result<RepoInfo> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.endpoint,
            encode(revision)
        );
        let ctx = Ctx {
            repo,
            revision,
            file: None,
        };
        let resp = self.send(self.client.get(&url)).await?;
        let resp = self.check(resp, &ctx).await?;
        let text = resp.text().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_str(&text).map_err(|e| Error::Protocol {
            url,
            detail: format!("repository info is not what the hub sends: {e}"),
        })
    }

    /// Size and etag of one file from a `HEAD` on its resolve URL (for mirrors that do
    /// not answer `?blobs=true`).
    ///
    /// # Errors
    /// As [`Self::repo_info`]; a response without an etag or a size.
    pub async fn head_file(&self, repo: &str, commit: &str, file: &str) -> Result<FileMeta> {
        let url = self.file_url(repo, commit, file);
        let ctx = Ctx {
            repo,
            revision: commit,
            file: Some(file),
        };
        let resp = self
            .send(
                self.no_redirect
                    .head(&url)
                    .header("accept-encoding", "identity"),
            )
            .await?;
        let resp = if resp.status().is_redirection() {
            resp
        } else {
            self.check(resp, &ctx).await?
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.trim_matches('"')
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .to_owned()
                })
        };
        let etag = header("x-linked-etag").or_else(|| header(ETAG.as_str()));
        let size = header("x-linked-size")
            .or_else(|| header(CONTENT_LENGTH.as_str()))
            .and_then(|s| s.parse().ok());
        match (etag, size) {
            (Some(etag), Some(size)) => Ok(FileMeta { etag, size }),
            _ => Err(Error::Protocol {
                url,
                detail: "no ETag/X-Linked-Etag or size on the file".into(),
            }),
        }
    }

    /// `{endpoint}/{repo}/resolve/{commit}/{file}`.
    pub fn file_url(&self, repo: &str, commit: &str, file: &str) -> String {
        let path: Vec<String> = file.split('/').map(encode).collect();
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            encode(commit),
            path.join("/")
        )
    }

    /// `GET` of a file from byte `offset` (a `Range` request when `offset > 0`); follows
    /// the redirect to the CDN.
    ///
    /// # Errors
    /// Unreachable, or an error status (416 is returned as a response, for the caller).
    pub async fn get_from(&self, url: &str, offset: u64, ctx: &Ctx<'_>) -> Result<Response> {
        let mut req = self.client.get(url).header("accept-encoding", "identity");
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = self.send(req).await?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(resp);
        }
        self.check(resp, ctx).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Response> {
        req.send().await.map_err(|e| self.unreachable(e))
    }

    pub fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::Unreachable {
            endpoint: self.endpoint.clone(),
            detail: error_chain(&e),
        }
    }

    /// Passes successful responses through; maps the hub's errors to [`Error`].
    async fn check(&self, resp: Response, ctx: &Ctx<'_>) -> Result<Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let code = header("x-error-code").unwrap_or_default();
        let message = header("x-error-message")
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
        let url = resp.url().to_string();
        let repo = ctx.repo.to_owned();
        let endpoint = self.endpoint.clone();
        let with_token = self.with_token;
        Err(match (code.as_str(), status.as_u16()) {
            ("RevisionNotFound", _) => Error::RevisionNotFound {
                repo,
                revision: ctx.revision.to_owned(),
            },
            ("EntryNotFound", _) => Error::EntryNotFound {
                repo,
                revision: ctx.revision.to_owned(),
                file: ctx.file.unwrap_or("").to_owned(),
            },
            ("GatedRepo", _) => Error::Gated {
                repo,
                endpoint,
                with_token,
            },
            ("RepoNotFound", _) => Error::RepoNotFound {
                repo,
                endpoint,
                with_token,
            },
            (_, 401) if with_token => Error::BadToken { repo, message },
            (_, 401) => Error::RepoNotFound {
                repo,
                endpoint,
                with_token,
            },
            (_, 403) => Error::Forbidden { repo, message },
            (_, 404) if ctx.file.is_some() => Error::EntryNotFound {
                repo,
                revision: ctx.revision.to_owned(),
                file: ctx.file.unwrap_or("").to_owned(),
            },
            (_, 404) => Error::RepoNotFound {
                repo,
                endpoint,
                with_token,
            },
            (_, status) => Error::Http {
                url,
                status,
                message,
            },
        })
    }
}

/// Transient failures are retried (resumed): the network, timeouts, 429 and 5xx.
pub(crate) fn is_transient(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => true,
        Error::Http { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// `e` and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay).
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_revisions_and_file_segments() {
        assert_eq!(encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode("v1.0_a-b~"), "v1.0_a-b~");
        let hub = Hub::new(&HubOptions {
            endpoint: "http://h".into(),
            cache_dir: "/c".into(),
            token: None,
            offline: false,
        })
        .unwrap();
        assert_eq!(
            hub.file_url("org/n", "main", "sub dir/a+b.gguf"),
            "http://h/org/n/resolve/main/sub%20dir/a%2Bb.gguf"
        );
    }

    #[test]
    fn sibling_metadata() {
        let s: Sibling = serde_json::from_str(
            r#"{"rfilename":"m.gguf","size":10,"blobId":"b","lfs":{"sha256":"s","size":10,"pointerSize":1}}"#,
        )
        .unwrap();
        assert_eq!(
            s.meta(),
            Some(FileMeta {
                etag: "s".into(),
                size: 10
            })
        );
        let s: Sibling =
            serde_json::from_str(r#"{"rfilename":"c.json","size":3,"blobId":"b"}"#).unwrap();
        assert_eq!(
            s.meta(),
            Some(FileMeta {
                etag: "b".into(),
                size: 3
            })
        );
        let s: Sibling = serde_json::from_str(r#"{"rfilename":"c.json"}"#).unwrap();
        assert_eq!(s.meta(), None);
    }
}
