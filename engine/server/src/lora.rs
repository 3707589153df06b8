//! The LoRA adapters a server serves: each name's engine id, source and parent model, and
//! their weights, kept loaded for at most `--max-cpu-loras` adapters (least recently used
//! first out; an evicted adapter is read from disk again when a request names it).
//!
//! Routing (`model` naming an adapter), `/v1/models` and the runtime load/unload
//! endpoints all read this one registry. Ids are never reused, so a request admitted
//! before its adapter was unloaded finishes with the weights it holds, and a later
//! adapter of the same name never shares its KV (the id is part of block hashes).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candela_contract::ModelRef;
use candela_contract::serve::LoraArgs;
use candela_core::LoraId;
use candela_model::{LoraAdapter, ModelConfig};

use crate::{Error, Result};

/// The adapter a request runs with.
#[derive(Clone)]
pub struct LoraHandle {
    pub id: LoraId,
    pub name: String,
    pub adapter: Arc<LoraAdapter>,
}

impl std::fmt::Debug for LoraHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("rank", &self.adapter.rank())
            .finish()
    }
}

/// What `/v1/models` shows of an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterCard {
    pub name: String,
    /// The served model it adapts (vLLM's `parent`).
    pub parent: String,
    /// Where its files are (vLLM's `root`).
    pub root: String,
}

/// The registry; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LoraRegistry {
    model: ModelConfig,
    max_rank: usize,
    max_cpu_loras: usize,
    hub: candela_hub::HubOptions,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: LoraId,
    /// A use counter for the LRU.
    clock: u64,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    id: LoraId,
    name: String,
    path: PathBuf,
    parent: String,
    /// `None` once evicted from memory.
    weights: Option<Arc<LoraAdapter>>,
    last_used: u64,
}

impl LoraRegistry {
    /// An empty registry for a model of shape `model` with `--max-lora-rank` and
    /// `--max-cpu-loras` from `args`; hub adapters go through `hub`.
    pub fn new(model: ModelConfig, args: &LoraArgs, hub: candela_hub::HubOptions) -> Self {
        LoraRegistry {
            model,
            max_rank: args.max_lora_rank,
            max_cpu_loras: args.max_cpu_loras().max(1),
            hub,
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads adapter `name` from `source` (a PEFT directory or `hf://org/name`, fetched
    /// through the hub cache) and serves it as an adapter of `parent`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] when the name is taken or invalid, the source cannot
    /// be resolved, or the files are not an adapter this model can run.
    pub async fn load(&self, name: &str, source: &str, parent: &str) -> Result<()> {
        let invalid = |param, message: String| Error::InvalidRequest {
            param: Some(param),
            message,
        };
        let taken = || {
            invalid(
                "lora_name",
                format!("The lora adapter '{name}' has already been loaded."),
            )
        };
        candela_contract::lora::check_name(name).map_err(|m| invalid("lora_name", m))?;
        // Checked before the files are fetched, and again once they are read.
        if self.contains(name) {
            return Err(taken());
        }
        let path = self
            .resolve(source)
            .await
            .map_err(|e| invalid("lora_path", format!("LoRA adapter {name}: {e}")))?;
        let weights = self
            .read(&path)
            .await
            .map_err(|e| invalid("lora_path", format!("LoRA adapter {name}: {e}")))?;
        let bytes = weights.weight_bytes();
        let mut inner = self.lock();
        // Another load of the same name may have finished while this one read its files.
        if inner.entries.iter().any(|e| e.name == name) {
            return Err(taken());
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.clock += 1;
        let last_used = inner.clock;
        inner.entries.push(Entry {
            id,
            name: name.to_owned(),
            path,
            parent: parent.to_owned(),
            weights: Some(weights),
            last_used,
        });
        self.evict(&mut inner);
        tracing::info!(adapter = %name, source = %source, bytes, "LoRA adapter loaded");
        Ok(())
    }

    /// Stops serving `name`. Requests already admitted with it finish normally.
    ///
    /// # Errors
    /// [`Error::LoraNotFound`] when no adapter has that name.
    pub fn unload(&self, name: &str) -> Result<()> {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|e| e.name != name);
        if inner.entries.len() == before {
            return Err(Error::LoraNotFound(name.to_owned()));
        }
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().entries.iter().any(|e| e.name == name)
    }

    /// The adapters, in load order.
    pub fn cards(&self) -> Vec<AdapterCard> {
        self.lock()
            .entries
            .iter()
            .map(|e| AdapterCard {
                name: e.name.clone(),
                parent: e.parent.clone(),
                root: e.path.display().to_string(),
            })
            .collect()
    }

    /// The adapter `name` for a request, reading it from disk again if it was evicted;
    /// `None` when no adapter has that name.
    ///
    /// # Errors
    /// [`Error::Internal`] when an evicted adapter's files can no longer be read.
    pub async fn handle(&self, name: &str) -> Result<Option<LoraHandle>> {
        let (id, path) = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            let Some(e) = inner.entries.iter_mut().find(|e| e.name == name) else {
                return Ok(None);
            };
            e.last_used = now;
            if let Some(w) = &e.weights {
                return Ok(Some(LoraHandle {
                    id: e.id,
                    name: e.name.clone(),
                    adapter: w.clone(),
                }));
            }
            (e.id, e.path.clone())
        };
        let weights = self
            .read(&path)
            .await
            .map_err(|e| Error::Internal(format!("reloading LoRA adapter {name}: {e}")))?;
        let mut inner = self.lock();
        // Unloaded (or replaced by a new load of the name) meanwhile: the request was
        // addressed to an adapter that is gone.
        let Some(e) = inner.entries.iter_mut().find(|e| e.id == id) else {
            return Ok(None);
        };
        let adapter = e.weights.get_or_insert(weights).clone();
        self.evict(&mut inner);
        Ok(Some(LoraHandle {
            id,
            name: name.to_owned(),
            adapter,
        }))
    }

    /// Drops the weights of the least recently used adapters past `--max-cpu-loras`.
    fn evict(&self, inner: &mut Inner) {
        loop {
            let resident: Vec<&mut Entry> = inner
                .entries
                .iter_mut()
                .filter(|e| e.weights.is_some())
                .collect();
            if resident.len() <= self.max_cpu_loras {
                return;
            }
            if let Some(oldest) = resident.into_iter().min_by_key(|e| e.last_used) {
                tracing::debug!(adapter = %oldest.name, "LoRA adapter evicted from memory");
                oldest.weights = None;
            }
        }
    }

    /// A source as a local directory: a path as it is, `hf://org/name` through the hub.
    async fn resolve(&self, source: &str) -> std::result::Result<PathBuf, String> {
        let parsed = ModelRef::parse(source, Path::exists)?;
        let resolved = candela_hub::resolve(&parsed, &candela_hub::Request::default(), &self.hub)
            .await
            .map_err(|e| e.to_string())?;
        Ok(resolved.path)
    }

    /// Reads and checks an adapter directory off the async threads.
    async fn read(&self, path: &Path) -> std::result::Result<Arc<LoraAdapter>, String> {
        let (path, model, max_rank) = (path.to_owned(), self.model.clone(), self.max_rank);
        tokio::task::spawn_blocking(move || LoraAdapter::load(&path, &model, max_rank))
            .await
            .map_err(|e| e.to_string())?
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}
