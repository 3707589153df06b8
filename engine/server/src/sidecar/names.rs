//! The sidecar's own series — the one place they are spelled. The engine's
//! `vllm:` series keep their names from [`crate::metrics::names`]; GPU gauges use
//! the DCGM exporter's names, units and labels so GPU dashboards work unchanged.

/// 1 while the sidecar holds a live `WatchStats` stream from the engine, else 0.
pub const ENGINE_UP: &str = "candela_sidecar_engine_up";
/// Seconds since the last snapshot arrived (absent before the first one).
pub const SNAPSHOT_AGE: &str = "candela_sidecar_snapshot_age_seconds";

/// CPU time (user + system) of the engine process, from `/proc/<pid>/stat`.
pub const ENGINE_PROCESS_CPU: &str = "candela_engine_process_cpu_seconds_total";
/// Resident memory of the engine process, from `/proc/<pid>/status`.
pub const ENGINE_PROCESS_RSS: &str = "candela_engine_process_resident_memory_bytes";

/// CPU time of the whole host (all CPUs) by `mode`, from `/proc/stat`.
pub const HOST_CPU: &str = "candela_host_cpu_seconds_total";
/// Online CPUs of the host.
pub const HOST_CPUS: &str = "candela_host_cpus";
/// `MemTotal` of `/proc/meminfo`.
pub const HOST_MEMORY_TOTAL: &str = "candela_host_memory_total_bytes";
/// `MemAvailable` of `/proc/meminfo`.
pub const HOST_MEMORY_AVAILABLE: &str = "candela_host_memory_available_bytes";

/// DCGM exporter names (gauges; labels `gpu`, `UUID`, `device`, `modelName`).
pub const DCGM_GPU_UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
pub const DCGM_FB_USED: &str = "DCGM_FI_DEV_FB_USED";
pub const DCGM_FB_FREE: &str = "DCGM_FI_DEV_FB_FREE";
pub const DCGM_POWER_USAGE: &str = "DCGM_FI_DEV_POWER_USAGE";
pub const DCGM_GPU_TEMP: &str = "DCGM_FI_DEV_GPU_TEMP";
