//! Device metrics the sidecar adds next to the engine's: the engine process's CPU
//! time and RSS, the host's CPU time and memory, and NVIDIA GPUs through NVML.
//!
//! Everything is read at scrape time (blocking file reads and NVML calls: run
//! [`DeviceSampler::render`] off the async runtime). Sources, and what happens
//! when one is missing:
//! - Engine process: `--engine-pid`, else the first `/proc/<pid>` whose command
//!   line is `candela serve …`. Inside a pod the engine is only visible with
//!   `shareProcessNamespace: true`; without it the process series are absent and
//!   the host series below are the fallback.
//! - Host: `/proc/stat` and `/proc/meminfo`. In a container these are the node's
//!   figures as the kernel shows them, not the container's cgroup limits.
//! - GPUs: NVML loaded at run time (`libnvidia-ml.so`). When it cannot be loaded
//!   (no driver, no GPU) there are simply no `DCGM_FI_DEV_*` series; a query that
//!   fails for one device drops that one sample.

use std::fmt::Write;
use std::fs;
use std::sync::Mutex;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use tracing::{debug, info};

use super::names;

/// Clock ticks per second in `/proc` (the kernel's fixed `USER_HZ` ABI value).
const USER_HZ: f64 = 100.0;
/// `/proc/stat` CPU columns, in order.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Reads device metrics; one per sidecar.
pub struct DeviceSampler {
    /// `--engine-pid`: when set, never searched for.
    fixed_pid: Option<u32>,
    /// The engine found by scanning `/proc`, re-checked on every scrape.
    found_pid: Mutex<Option<u32>>,
    nvml: Option<Nvml>,
}

impl DeviceSampler {
    /// Loads NVML if it is there (blocking: call off the async runtime).
    pub fn new(engine_pid: Option<u32>) -> Self {
        let nvml = match Nvml::init() {
            Ok(nvml) => {
                info!(
                    gpus = nvml.device_count().unwrap_or(0),
                    "NVML loaded: exporting DCGM_FI_DEV_* gauges"
                );
                Some(nvml)
            }
            Err(e) => {
                info!(reason = %e, "NVML not available: no GPU metrics");
                None
            }
        };
        DeviceSampler {
            fixed_pid: engine_pid,
            found_pid: Mutex::new(None),
            nvml,
        }
    }

    /// Appends every device series to `out` (blocking).
    pub fn render(&self, out: &mut String) {
        if let Some(pid) = self.engine_pid() {
            render_process(out, pid);
        }
        render_host(out);
        if let Some(nvml) = &self.nvml {
            render_gpus(out, nvml);
        }
    }

    fn engine_pid(&self) -> Option<u32> {
        if self.fixed_pid.is_some() {
            return self.fixed_pid;
        }
        let mut found = self.found_pid.lock().ok()?;
        if let Some(pid) = *found
            && read_cmdline(pid).is_some_and(|argv| is_engine_cmdline(&argv))
        {
            return Some(pid);
        }
        *found = find_engine();
        if let Some(pid) = *found {
            debug!(pid, "found the engine process");
        }
        *found
    }
}

fn render_process(out: &mut String, pid: u32) {
    if let Some(ticks) = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| process_cpu_ticks(&s))
    {
        header(
            out,
            names::ENGINE_PROCESS_CPU,
            "Engine process CPU time, user plus system, in seconds.",
            "counter",
        );
        sample(out, names::ENGINE_PROCESS_CPU, &[], ticks as f64 / USER_HZ);
    }
    if let Some(kib) = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| kib_field(&s, "VmRSS:"))
    {
        header(
            out,
            names::ENGINE_PROCESS_RSS,
            "Engine process resident memory in bytes.",
            "gauge",
        );
        sample(out, names::ENGINE_PROCESS_RSS, &[], (kib * 1024) as f64);
    }
}

fn render_host(out: &mut String) {
    if let Ok(stat) = fs::read_to_string("/proc/stat") {
        if let Some(ticks) = host_cpu_ticks(&stat) {
            header(
                out,
                names::HOST_CPU,
                "Host CPU time over all CPUs by mode, in seconds.",
                "counter",
            );
            for (mode, t) in CPU_MODES.iter().zip(ticks) {
                sample(out, names::HOST_CPU, &[("mode", mode)], t as f64 / USER_HZ);
            }
        }
        let cpus = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        header(out, names::HOST_CPUS, "Online CPUs of the host.", "gauge");
        sample(out, names::HOST_CPUS, &[], cpus as f64);
    }
    if let Ok(meminfo) = fs::read_to_string("/proc/meminfo") {
        for (name, field, help) in [
            (
                names::HOST_MEMORY_TOTAL,
                "MemTotal:",
                "Host memory in bytes (MemTotal).",
            ),
            (
                names::HOST_MEMORY_AVAILABLE,
                "MemAvailable:",
                "Host memory available in bytes (MemAvailable).",
            ),
        ] {
            if let Some(kib) = kib_field(&meminfo, field) {
                header(out, name, help, "gauge");
                sample(out, name, &[], (kib * 1024) as f64);
            }
        }
    }
}

/// One GPU's readings; `None` where NVML could not answer.
struct GpuReading {
    labels: [(&'static str, String); 4],
    util: Option<f64>,
    fb_used_mib: Option<f64>,
    fb_free_mib: Option<f64>,
    power_w: Option<f64>,
    temp_c: Option<f64>,
}

/// Picks one reading out of a [`GpuReading`].
type GpuField = fn(&GpuReading) -> Option<f64>;

fn render_gpus(out: &mut String, nvml: &Nvml) {
    const MIB: f64 = 1024.0 * 1024.0;
    let count = nvml.device_count().unwrap_or(0);
    let readings: Vec<GpuReading> = (0..count)
        .filter_map(|i| {
            let dev = nvml.device_by_index(i).ok()?;
            let memory = dev.memory_info().ok();
            Some(GpuReading {
                labels: [
                    ("gpu", i.to_string()),
                    ("UUID", dev.uuid().unwrap_or_default()),
                    ("device", format!("nvidia{i}")),
                    ("modelName", dev.name().unwrap_or_default()),
                ],
                util: dev.utilization_rates().ok().map(|u| f64::from(u.gpu)),
                fb_used_mib: memory.as_ref().map(|m| m.used as f64 / MIB),
                fb_free_mib: memory.as_ref().map(|m| m.free as f64 / MIB),
                power_w: dev.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                temp_c: dev.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
            })
        })
        .collect();
    let gauges: [(&str, &str, GpuField); 5] = [
        (names::DCGM_GPU_UTIL, "GPU utilization (in %).", |r| r.util),
        (
            names::DCGM_FB_USED,
            "Framebuffer memory used (in MiB).",
            |r| r.fb_used_mib,
        ),
        (
            names::DCGM_FB_FREE,
            "Framebuffer memory free (in MiB).",
            |r| r.fb_free_mib,
        ),
        (names::DCGM_POWER_USAGE, "Power draw (in W).", |r| r.power_w),
        (names::DCGM_GPU_TEMP, "GPU temperature (in C).", |r| {
            r.temp_c
        }),
    ];
    for (name, help, value) in gauges {
        let mut wrote_header = false;
        for r in &readings {
            if let Some(v) = value(r) {
                if !wrote_header {
                    header(out, name, help, "gauge");
                    wrote_header = true;
                }
                let labels: Vec<(&str, &str)> =
                    r.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                sample(out, name, &labels, v);
            }
        }
    }
}

/// The first process (other than this one) running `candela serve`.
fn find_engine() -> Option<u32> {
    let me = std::process::id();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != me)
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .find(|&pid| read_cmdline(pid).is_some_and(|argv| is_engine_cmdline(&argv)))
}

fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// `candela serve …` (any path to the binary).
pub(crate) fn is_engine_cmdline(argv: &[String]) -> bool {
    let binary = argv.first().map(|a| a.rsplit('/').next().unwrap_or(a));
    binary == Some("candela") && argv.get(1).is_some_and(|a| a == "serve")
}

/// utime + stime from `/proc/<pid>/stat` (fields 14 and 15; the command name may hold spaces).
pub(crate) fn process_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The aggregate `cpu` line of `/proc/stat`, in [`CPU_MODES`] order.
pub(crate) fn host_cpu_ticks(stat: &str) -> Option<[u64; 8]> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut out = [0; 8];
    for (slot, v) in out.iter_mut().zip(line.split_whitespace().skip(1)) {
        *slot = v.parse().ok()?;
    }
    Some(out)
}

/// A `Name:  123 kB` field of `/proc/meminfo` or `/proc/<pid>/status`, in KiB.
pub(crate) fn kib_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

pub(super) fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(super) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let val = val
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{sep}{k}=\"{val}\"");
        }
        out.push('}');
    }
    let value = if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        }
    } else {
        v.to_string()
    };
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn engine_command_lines() {
        assert!(is_engine_cmdline(&argv(&[
            "/usr/local/bin/candela",
            "serve",
            "--port",
            "8000"
        ])));
        assert!(is_engine_cmdline(&argv(&["candela", "serve"])));
        assert!(!is_engine_cmdline(&argv(&["candela", "sidecar"])));
        assert!(!is_engine_cmdline(&argv(&["vim", "candela", "serve"])));
        assert!(!is_engine_cmdline(&[]));
    }

    #[test]
    fn proc_parsers() {
        let stat = "4242 (candela serve) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
        assert_eq!(process_cpu_ticks(stat), Some(300));
        let host = "cpu  10 1 20 300 4 0 5 0 0 0\ncpu0 10 1 20 300 4 0 5 0 0 0\n";
        assert_eq!(host_cpu_ticks(host), Some([10, 1, 20, 300, 4, 0, 5, 0]));
        let meminfo = "MemTotal:       16303428 kB\nMemFree:  1 kB\nMemAvailable:   9000000 kB\n";
        assert_eq!(kib_field(meminfo, "MemTotal:"), Some(16_303_428));
        assert_eq!(kib_field(meminfo, "MemAvailable:"), Some(9_000_000));
        assert_eq!(kib_field(meminfo, "VmRSS:"), None);
    }

    #[test]
    fn this_host_renders_process_and_host_series() {
        let sampler = DeviceSampler {
            fixed_pid: Some(std::process::id()),
            found_pid: Mutex::new(None),
            nvml: None,
        };
        let mut out = String::new();
        sampler.render(&mut out);
        for name in [
            names::ENGINE_PROCESS_CPU,
            names::ENGINE_PROCESS_RSS,
            names::HOST_CPUS,
            names::HOST_MEMORY_TOTAL,
        ] {
            assert!(
                out.contains(&format!("\n{name} ")),
                "{name} missing in\n{out}"
            );
        }
        assert!(out.contains(&format!("{}{{mode=\"idle\"}} ", names::HOST_CPU)));
    }
}
