//! The engine profiler behind `POST /start_profile` and `POST /stop_profile`
//! (vLLM's endpoints): while on, every `tracing` span of the engine — each step
//! with its batch composition, `schedule`, `swap`, `forward` and each layer's
//! `attention` / `mlp`, `lm_head`, `sample` — is recorded; stopping writes a
//! Chrome-trace JSON (`traceEvents`, complete events in µs) into the profiler
//! directory, which opens in Perfetto or chrome://tracing.
//!
//! Cost when off: the layer's filter reads one atomic flag per span callsite
//! hit; nothing is allocated or timed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

use crate::error::Error;

#[derive(Debug)]
struct Shared {
    active: AtomicBool,
    epoch: Instant,
    events: Mutex<Vec<Value>>,
}

/// Handle to the profiler; cheap to clone.
#[derive(Debug, Clone)]
pub struct Profiler {
    shared: Arc<Shared>,
    dir: Option<PathBuf>,
}

impl Profiler {
    /// A stopped profiler writing to `dir` (`None` disables the endpoints).
    pub fn new(dir: Option<PathBuf>) -> Self {
        let shared = Shared {
            active: AtomicBool::new(false),
            epoch: Instant::now(),
            events: Mutex::new(Vec::new()),
        };
        Profiler {
            shared: Arc::new(shared),
            dir,
        }
    }

    /// The `tracing` layer that records spans while the profiler runs.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        SpanRecorder {
            shared: self.shared.clone(),
        }
        .with_filter(ActiveFilter(self.shared.clone()))
    }

    /// Starts (or restarts) recording.
    ///
    /// # Errors
    /// [`Error::ProfilingDisabled`] without a profiler directory.
    pub fn start(&self) -> Result<(), Error> {
        if self.dir.is_none() {
            return Err(Error::ProfilingDisabled);
        }
        if let Ok(mut events) = self.shared.events.lock() {
            events.clear();
        }
        self.shared.active.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Stops recording and writes the trace; returns its path.
    ///
    /// # Errors
    /// [`Error::ProfilingDisabled`], [`Error::NoProfileRunning`], or the write failure.
    pub fn stop(&self) -> Result<PathBuf, Error> {
        let dir = self.dir.as_deref().ok_or(Error::ProfilingDisabled)?;
        if !self.shared.active.swap(false, Ordering::Relaxed) {
            return Err(Error::NoProfileRunning);
        }
        let events = self
            .shared
            .events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        write_trace(dir, events)
    }
}

fn write_trace(dir: &Path, events: Vec<Value>) -> Result<PathBuf, Error> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let path = dir.join(format!("candela-trace-{stamp}.json"));
    let trace = json!({ "traceEvents": events, "displayTimeUnit": "ms" });
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("json.part");
        std::fs::write(&tmp, serde_json::to_vec(&trace)?)?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| Error::io(format!("cannot write the profile to {}", path.display()), e))?;
    Ok(path)
}

/// Passes Candela's spans, and only while the profiler runs.
struct ActiveFilter(Arc<Shared>);

impl<S> Filter<S> for ActiveFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.is_span()
            && meta.target().starts_with("candela")
            && self.0.active.load(Ordering::Relaxed)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if meta.is_span() && meta.target().starts_with("candela") {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }
}

struct SpanRecorder {
    shared: Arc<Shared>,
}

/// Per-span data kept in the span's extensions.
struct Timing {
    args: Map<String, Value>,
    entered: Option<Instant>,
}

struct ArgVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for ArgVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

impl<S> Layer<S> for SpanRecorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut args = Map::new();
        attrs.record(&mut ArgVisitor(&mut args));
        span.extensions_mut().insert(Timing {
            args,
            entered: None,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(t) = span.extensions_mut().get_mut::<Timing>() {
            values.record(&mut ArgVisitor(&mut t.args));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(t) = span.extensions_mut().get_mut::<Timing>() {
            t.entered = Some(Instant::now());
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(t) = ext.get_mut::<Timing>() else {
            return;
        };
        let Some(entered) = t.entered.take() else {
            return;
        };
        let ts = entered.duration_since(self.shared.epoch).as_secs_f64() * 1e6;
        let dur = entered.elapsed().as_secs_f64() * 1e6;
        let event = json!({
            "name": span.name(),
            "cat": span.metadata().target(),
            "ph": "X",
            "ts": ts,
            "dur": dur,
            "pid": std::process::id(),
            "tid": thread_id(),
            "args": t.args.clone(),
        });
        if let Ok(mut events) = self.shared.events.lock() {
            events.push(event);
        }
    }
}

fn thread_id() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    h.finish() % 100_000
}

/// `POST /start_profile` and `POST /stop_profile`.
pub fn router(profiler: Profiler) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::post;
    let answer = |r: Result<Value, Error>| match r {
        Ok(body) => (StatusCode::OK, axum::Json(body)),
        Err(e) => {
            let status = match e {
                Error::ProfilingDisabled | Error::NoProfileRunning => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let body = json!({"error": {"message": e.to_string(), "type": "invalid_request_error", "param": null, "code": null}});
            (status, axum::Json(body))
        }
    };
    let (p1, p2) = (profiler.clone(), profiler);
    axum::Router::new()
        .route(
            "/start_profile",
            post(move || async move { answer(p1.start().map(|()| json!({"status": "started"}))) }),
        )
        .route(
            "/stop_profile",
            post(move || async move {
                answer(
                    p2.stop()
                        .map(|path| json!({"status": "stopped", "path": path})),
                )
            }),
        )
}
