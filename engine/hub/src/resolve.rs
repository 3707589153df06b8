//! `--model` → a path the loader reads: local paths as they are; hub references through
//! the cache, downloading what is missing (online), or from the cache alone (offline, or
//! with a warning when the hub cannot be reached).

use std::path::PathBuf;

use candela_contract::{HubRef, ModelRef};
use tracing::{info, warn};

use crate::api::{FileMeta, Hub};
use crate::cache::RepoCache;
use crate::download::Fetch;
use crate::select::{self, Plan};
use crate::{Error, HubOptions, Result};

/// The branch a hub reference means without `--revision`.
pub const DEFAULT_REVISION: &str = "main";

/// The hub-only flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `--revision`: branch, tag or commit.
    pub revision: Option<&'a str>,
    /// `--gguf-file`: the GGUF file to serve from the repository.
    pub gguf_file: Option<&'a str>,
}

/// A model on local disk, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// A GGUF file or a Hugging Face directory (a snapshot directory for hub models).
    pub path: PathBuf,
    /// `Some` for hub models.
    pub hub: Option<HubOrigin>,
}

/// Which repository, revision and commit a hub model was served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOrigin {
    pub repo: String,
    pub revision: String,
    pub commit: String,
}

/// Resolves `model` to local files, fetching hub models into `opts.cache_dir`.
///
/// # Errors
/// One line: a missing local path, a hub flag on a local model, or any hub [`Error`].
pub async fn resolve(model: &ModelRef, req: &Request<'_>, opts: &HubOptions) -> Result<Resolved> {
    match model {
        ModelRef::Local(path) => {
            for (flag, set) in [
                ("--revision", req.revision.is_some()),
                ("--gguf-file", req.gguf_file.is_some()),
            ] {
                if set {
                    return Err(Error::Usage(format!(
                        "{flag} applies to hub models (hf://org/name); {} is a local path",
                        path.display()
                    )));
                }
            }
            if !path.exists() {
                return Err(Error::Usage(format!("model not found: {}", path.display())));
            }
            Ok(Resolved {
                path: path.clone(),
                hub: None,
            })
        }
        ModelRef::Hub(hub) => from_hub(hub, req, opts).await,
    }
}

async fn from_hub(model: &HubRef, req: &Request<'_>, opts: &HubOptions) -> Result<Resolved> {
    let revision = req.revision.unwrap_or(DEFAULT_REVISION);
    let cache = RepoCache::new(&opts.cache_dir, &model.repo);
    if opts.offline {
        return from_cache(&cache, model, req, revision).map_err(|reason| Error::NotCached {
            repo: model.repo.clone(),
            revision: revision.to_owned(),
            cache: opts.cache_dir.clone(),
            reason: format!("HF_HUB_OFFLINE is set and {reason}"),
        });
    }
    let hub = Hub::new(opts)?;
    let info = match hub.repo_info(&model.repo, revision).await {
        Ok(info) => info,
        Err(e @ Error::Unreachable { .. }) => {
            return match from_cache(&cache, model, req, revision) {
                Ok(resolved) => {
                    warn!("{e}; serving hf://{}@{revision} from the cache", model.repo);
                    Ok(resolved)
                }
                Err(_) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let commit = info.sha.clone();
    let names: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let plan = select::plan(&names, model.quant.as_deref(), req.gguf_file).map_err(|problem| {
        Error::Selection {
            repo: model.repo.clone(),
            revision: revision.to_owned(),
            problem,
        }
    })?;
    info!(repo = %model.repo, revision, commit = %commit, "resolved hub model");
    let fetch = |file: String| {
        let hub = &hub;
        let cache = &cache;
        let info = &info;
        let commit = &commit;
        async move {
            let existing = cache.snapshot_dir(commit).join(&file);
            if existing.exists() {
                return Ok(existing);
            }
            let meta: FileMeta = match info
                .siblings
                .iter()
                .find(|s| s.rfilename == file)
                .and_then(|s| s.meta())
            {
                Some(meta) => meta,
                None => hub.head_file(&model.repo, commit, &file).await?,
            };
            Fetch {
                hub,
                cache,
                repo: &model.repo,
                commit,
                file: &file,
                meta,
            }
            .run()
            .await
        }
    };
    let path = match plan {
        Plan::Gguf(file) => fetch(file).await?,
        Plan::HfDir { files, index } => {
            for file in files {
                fetch(file).await?;
            }
            if let Some(index) = index {
                let shards =
                    index_shards(&cache.snapshot_dir(&commit), &index).map_err(|problem| {
                        Error::Selection {
                            repo: model.repo.clone(),
                            revision: revision.to_owned(),
                            problem,
                        }
                    })?;
                for shard in shards {
                    fetch(shard).await?;
                }
            }
            cache.snapshot_dir(&commit)
        }
    };
    cache.write_ref(revision, &commit)?;
    Ok(Resolved {
        path,
        hub: Some(HubOrigin {
            repo: model.repo.clone(),
            revision: revision.to_owned(),
            commit,
        }),
    })
}

/// The model from a complete cached snapshot of `revision`, or why there is none.
fn from_cache(
    cache: &RepoCache,
    model: &HubRef,
    req: &Request<'_>,
    revision: &str,
) -> Result<Resolved, String> {
    let commit = cache
        .read_ref(revision)
        .ok_or_else(|| format!("no download of revision `{revision}` was recorded"))?;
    let files = cache.snapshot_files(&commit);
    if files.is_empty() {
        return Err(format!("snapshot {commit} is empty"));
    }
    let plan = select::plan(&files, model.quant.as_deref(), req.gguf_file)?;
    let snapshot = cache.snapshot_dir(&commit);
    let path = match plan {
        Plan::Gguf(file) => snapshot.join(file),
        Plan::HfDir { index, .. } => {
            if let Some(index) = index {
                let missing: Vec<String> = index_shards(&snapshot, &index)?
                    .into_iter()
                    .filter(|s| !files.contains(s))
                    .collect();
                if !missing.is_empty() {
                    return Err(format!("shards missing: {}", missing.join(", ")));
                }
            }
            snapshot
        }
    };
    Ok(Resolved {
        path,
        hub: Some(HubOrigin {
            repo: model.repo.clone(),
            revision: revision.to_owned(),
            commit,
        }),
    })
}

/// The shards `snapshot/index` (a `model.safetensors.index.json`) names.
fn index_shards(snapshot: &std::path::Path, index: &str) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(snapshot.join(index)).map_err(|e| format!("{index}: {e}"))?;
    select::shards_from_index(&text)
}
