//! One file from the hub into the cache: under a file lock, into `<etag>.incomplete`,
//! resumed with `Range` after a dropped connection (and on the next start), verified
//! against the hub's size and hash, then renamed to its blob and linked into the snapshot.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use tracing::{info, warn};

use crate::api::{Ctx, FileMeta, Hub, error_chain, is_transient};
use crate::cache::RepoCache;
use crate::{Error, Result};

/// Attempts per download (the first and the resumes after it).
const ATTEMPTS: u32 = 6;
/// Seconds between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What to fetch.
pub(crate) struct Fetch<'a> {
    pub hub: &'a Hub,
    pub cache: &'a RepoCache,
    pub repo: &'a str,
    pub commit: &'a str,
    pub file: &'a str,
    pub meta: FileMeta,
}

impl Fetch<'_> {
    /// Makes `snapshots/<commit>/<file>` present and returns its path.
    ///
    /// # Errors
    /// Hub errors, an interrupted download after [`ATTEMPTS`], a verification failure.
    pub async fn run(&self) -> Result<PathBuf> {
        let blob = self.cache.blob(&self.meta.etag);
        if !blob.exists() {
            let _lock = self.lock().await?;
            // Another process may have finished it while this one waited.
            if !blob.exists() {
                self.download(&blob).await?;
            }
        }
        self.cache.link(self.commit, self.file, &self.meta.etag)
    }

    /// Holds `.locks/…/<etag>.lock` (flock, as Python's filelock) until dropped.
    async fn lock(&self) -> Result<File> {
        let path = self.cache.lock_file(&self.meta.etag);
        let parent = path.parent().expect("invariant: a lock file has a parent");
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !told {
                        info!(
                            lock = %path.display(),
                            "another process is downloading hf://{}/{}; waiting for it",
                            self.repo, self.file
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path)(e)),
            }
        }
    }

    async fn download(&self, blob: &Path) -> Result<()> {
        let part = self.cache.incomplete(&self.meta.etag);
        let parent = part.parent().expect("invariant: a blob has a parent");
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        let url = self.hub.file_url(self.repo, self.commit, self.file);
        let total = self.meta.size;
        let started = Instant::now();
        let start_at = file_len(&part);
        info!(
            "downloading hf://{}/{}: {} of {} ({}%){}",
            self.repo,
            self.file,
            mib(start_at.min(total)),
            mib(total),
            percent(start_at.min(total), total),
            if start_at > 0 {
                ", resuming a partial download"
            } else {
                ""
            }
        );
        let mut progress = Progress {
            total,
            last_log: Instant::now(),
        };
        let mut from_scratch_once = false;
        loop {
            self.transfer(&part, &url, &mut progress).await?;
            match verify(&part, &self.meta) {
                Ok(()) => break,
                Err((what, got, want)) => {
                    std::fs::remove_file(&part).map_err(Error::io(&part))?;
                    if from_scratch_once {
                        return Err(Error::Verification {
                            repo: self.repo.into(),
                            file: self.file.into(),
                            what,
                            got,
                            want,
                        });
                    }
                    warn!(
                        "hf://{}/{}: downloaded {what} does not match the hub's ({got} != {want}); downloading it again from the start",
                        self.repo, self.file
                    );
                    from_scratch_once = true;
                }
            }
        }
        let file = File::open(&part).map_err(Error::io(&part))?;
        file.sync_all().map_err(Error::io(&part))?;
        std::fs::rename(&part, blob).map_err(Error::io(blob))?;
        let secs = started.elapsed().as_secs_f64();
        let rate = total.saturating_sub(start_at) as f64 / secs.max(1e-3);
        info!(
            "downloaded hf://{}/{}: {} in {:.1} s ({}/s), {} verified",
            self.repo,
            self.file,
            mib(total),
            secs,
            mib(rate as u64),
            match self.meta.etag.len() {
                64 => "size and sha256",
                40 => "size and git blob sha1",
                _ => "size",
            }
        );
        Ok(())
    }

    /// Brings `part` to the full size, resuming after transient failures.
    async fn transfer(&self, part: &Path, url: &str, progress: &mut Progress) -> Result<()> {
        let ctx = Ctx {
            repo: self.repo,
            revision: self.commit,
            file: Some(self.file),
        };
        let total = self.meta.size;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut offset = file_len(part);
            if offset > total {
                truncate(part)?;
                offset = 0;
            }
            if offset == total {
                return Ok(());
            }
            let failure = match self.hub.get_from(url, offset, &ctx).await {
                Ok(resp) if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                    truncate(part)?;
                    format!("the hub refused to resume at byte {offset}")
                }
                Ok(resp) => {
                    let resumed = resp.status() == StatusCode::PARTIAL_CONTENT;
                    if !resumed && offset > 0 {
                        // The server ignored `Range`: start over.
                        truncate(part)?;
                    }
                    match self.stream(resp, part, progress).await {
                        Ok(()) if file_len(part) == total => return Ok(()),
                        Ok(()) => format!(
                            "the connection ended at {} of {total} bytes",
                            file_len(part)
                        ),
                        Err(detail) => detail,
                    }
                }
                Err(e) if is_transient(&e) => e.to_string(),
                Err(e) => return Err(e),
            };
            let done = file_len(part);
            if attempt >= ATTEMPTS {
                return Err(Error::Interrupted {
                    repo: self.repo.into(),
                    file: self.file.into(),
                    attempts: attempt,
                    done,
                    total,
                    detail: failure,
                });
            }
            let wait = Duration::from_millis(250 << (attempt - 1).min(4));
            warn!(
                "hf://{}/{}: {failure}; resuming at {} of {} in {:.1} s (attempt {}/{ATTEMPTS})",
                self.repo,
                self.file,
                mib(done),
                mib(total),
                wait.as_secs_f64(),
                attempt + 1
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Appends the body to `part`; a broken stream is an `Err` with its cause.
    async fn stream(
        &self,
        resp: reqwest::Response,
        part: &Path,
        progress: &mut Progress,
    ) -> Result<(), String> {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(|e| format!("{}: {e}", part.display()))?;
        let mut body = resp.bytes_stream();
        let mut written = file_len(part);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| error_chain(&e))?;
            if written + chunk.len() as u64 > self.meta.size {
                return Err(format!(
                    "the hub sent more than the {} bytes it announced",
                    self.meta.size
                ));
            }
            out.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", part.display()))?;
            written += chunk.len() as u64;
            progress.tick(self.repo, self.file, written);
        }
        out.flush().map_err(|e| format!("{}: {e}", part.display()))
    }
}

struct Progress {
    total: u64,
    last_log: Instant,
}

impl Progress {
    fn tick(&mut self, repo: &str, file: &str, done: u64) {
        if self.last_log.elapsed() >= PROGRESS_EVERY {
            self.last_log = Instant::now();
            info!(
                "downloading hf://{repo}/{file}: {} of {} ({}%)",
                mib(done),
                mib(self.total),
                percent(done, self.total)
            );
        }
    }
}

/// Size and hash of a finished download against the hub's metadata: sha256 for LFS
/// files (64-hex etag), git's blob sha1 for regular ones (40-hex etag); other etags
/// (some mirrors) are checked by size only.
fn verify(path: &Path, meta: &FileMeta) -> Result<(), (&'static str, String, String)> {
    let len = file_len(path);
    if len != meta.size {
        return Err(("size", len.to_string(), meta.size.to_string()));
    }
    let is_hex =
        |n: usize| meta.etag.len() == n && meta.etag.bytes().all(|b| b.is_ascii_hexdigit());
    let digest = if is_hex(64) {
        hash_file::<sha2::Sha256>(path, None)
    } else if is_hex(40) {
        hash_file::<sha1::Sha1>(path, Some(format!("blob {len}\0").as_bytes()))
    } else {
        return Ok(());
    };
    let digest = digest.map_err(|e| ("contents", e.to_string(), "readable".into()))?;
    if digest.eq_ignore_ascii_case(&meta.etag) {
        Ok(())
    } else {
        let what = if is_hex(64) {
            "sha256"
        } else {
            "git blob sha1"
        };
        Err((what, digest, meta.etag.clone()))
    }
}

fn hash_file<D: sha2::Digest>(path: &Path, prefix: Option<&[u8]>) -> std::io::Result<String> {
    let mut hasher = D::new();
    if let Some(p) = prefix {
        hasher.update(p);
    }
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn truncate(path: &Path) -> Result<()> {
    File::create(path).map(drop).map_err(Error::io(path))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn percent(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_uses_the_hash_the_etag_names() {
        let dir = std::env::temp_dir().join(format!("candela-hub-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `git hash-object` of "hello\n" and `sha256sum` of it.
        let git = "ce013625030ba8dba906f756967f9e9ca394464a";
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let m = |etag: &str, size| FileMeta {
            etag: etag.into(),
            size,
        };
        assert_eq!(verify(&p, &m(git, 6)), Ok(()));
        assert_eq!(verify(&p, &m(sha, 6)), Ok(()));
        assert_eq!(verify(&p, &m("mirror-etag", 6)), Ok(()));
        assert_eq!(verify(&p, &m(sha, 7)).unwrap_err().0, "size");
        assert_eq!(verify(&p, &m(&"0".repeat(64), 6)).unwrap_err().0, "sha256");
        assert_eq!(
            verify(&p, &m(&"0".repeat(40), 6)).unwrap_err().0,
            "git blob sha1"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
