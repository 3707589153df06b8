//! The Hugging Face cache layout, shared with Python's `huggingface_hub`:
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>            file contents, named by sha256 (LFS) or git sha1
//! <cache>/models--org--name/snapshots/<commit>/<f>  relative symlinks to ../../blobs/<etag>
//! <cache>/models--org--name/refs/<revision>         the commit a branch or tag pointed to
//! <cache>/.locks/models--org--name/<etag>.lock      held while a blob is downloaded
//! ```
//!
//! A blob only appears by renaming a verified `<etag>.incomplete`, so a blob that exists is
//! complete. No network here.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// True for a full 40-hex git commit id (a revision that needs no ref lookup).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One repository's corner of the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    root: PathBuf,
    folder: String,
}

impl RepoCache {
    /// The cache of model repository `repo` (`org/name`) under `cache_dir`.
    pub fn new(cache_dir: &Path, repo: &str) -> Self {
        Self {
            root: cache_dir.to_path_buf(),
            folder: format!("models--{}", repo.replace('/', "--")),
        }
    }

    /// The cache directory this repository lives in.
    pub fn cache_dir(&self) -> &Path {
        &self.root
    }

    /// `<cache>/models--org--name`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.folder)
    }

    /// The complete file with this etag.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.dir().join("blobs").join(etag)
    }

    /// Where the blob grows while it downloads.
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.dir().join("blobs").join(format!("{etag}.incomplete"))
    }

    /// The lock held while the blob downloads.
    pub fn lock_file(&self, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(&self.folder)
            .join(format!("{etag}.lock"))
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir().join("snapshots").join(commit)
    }

    /// The commit `revision` names: itself when it is a commit id, else what
    /// `refs/<revision>` recorded.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_owned());
        }
        std::fs::read_to_string(self.dir().join("refs").join(revision))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| is_commit_hash(s))
    }

    /// Records that `revision` pointed to `commit` (nothing for a commit id).
    ///
    /// # Errors
    /// I/O errors writing the ref.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.dir().join("refs").join(revision);
        let parent = path
            .parent()
            .expect("invariant: refs/<revision> has a parent");
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, commit).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))
    }

    /// Points `snapshots/<commit>/<file>` at the blob `etag` (relative symlink, as Python).
    ///
    /// # Errors
    /// I/O errors creating the link.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let link = self.snapshot_dir(commit).join(file);
        let parent = link
            .parent()
            .expect("invariant: a snapshot file has a parent");
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        // snapshots/<commit>/<a/b/f> → ../../(../..)blobs/<etag>
        let depth = file.split('/').count() + 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        match std::fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(link),
            Ok(_) => std::fs::remove_file(&link).map_err(Error::io(&link))?,
            Err(_) if link.exists() => std::fs::remove_file(&link).map_err(Error::io(&link))?,
            Err(_) => {}
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link).map_err(Error::io(&link))?;
        #[cfg(not(unix))]
        std::fs::copy(self.blob(etag), &link).map_err(Error::io(&link))?;
        Ok(link)
    }

    /// Files of a snapshot whose contents are present (relative paths, `/`-separated,
    /// sorted), or nothing when the snapshot does not exist.
    pub fn snapshot_files(&self, commit: &str) -> Vec<String> {
        let root = self.snapshot_dir(commit);
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // `metadata` follows the symlink: a dangling link is not a present file.
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => stack.push(path),
                    Ok(_) => {
                        if let Ok(rel) = path.strip_prefix(&root) {
                            out.push(rel.to_string_lossy().replace('\\', "/"));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("candela-hub-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn layout_matches_huggingface_hub() {
        let c = RepoCache::new(Path::new("/c"), "org/name");
        assert_eq!(c.dir(), PathBuf::from("/c/models--org--name"));
        assert_eq!(c.blob("ab"), PathBuf::from("/c/models--org--name/blobs/ab"));
        assert_eq!(
            c.lock_file("ab"),
            PathBuf::from("/c/.locks/models--org--name/ab.lock")
        );
        assert_eq!(
            c.snapshot_dir("c0"),
            PathBuf::from("/c/models--org--name/snapshots/c0")
        );
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("main") && !is_commit_hash(&"g".repeat(40)));
    }

    #[test]
    fn refs_links_and_snapshot_listing() {
        let root = tmp("layout");
        let c = RepoCache::new(&root, "org/name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(c.read_ref("main"), None);
        assert_eq!(c.read_ref(commit).as_deref(), Some(commit));
        c.write_ref("main", commit).unwrap();
        c.write_ref("refs/pr/1", commit).unwrap();
        assert_eq!(c.read_ref("main").as_deref(), Some(commit));
        assert_eq!(c.read_ref("refs/pr/1").as_deref(), Some(commit));

        std::fs::create_dir_all(c.blob("e1").parent().unwrap()).unwrap();
        std::fs::write(c.blob("e1"), b"one").unwrap();
        std::fs::write(c.blob("e2"), b"two").unwrap();
        let top = c.link(commit, "config.json", "e1").unwrap();
        let nested = c.link(commit, "sub/dir/w.gguf", "e2").unwrap();
        assert_eq!(std::fs::read(&top).unwrap(), b"one");
        assert_eq!(std::fs::read(&nested).unwrap(), b"two");
        // Relinking to another blob replaces the link; a dangling link is not listed.
        c.link(commit, "config.json", "e2").unwrap();
        assert_eq!(std::fs::read(&top).unwrap(), b"two");
        c.link(commit, "missing.bin", "nope").unwrap();
        assert_eq!(
            c.snapshot_files(commit),
            vec!["config.json".to_owned(), "sub/dir/w.gguf".to_owned()]
        );
        assert!(c.snapshot_files("f".repeat(40).as_str()).is_empty());
        std::fs::remove_dir_all(&root).ok();
    }
}
