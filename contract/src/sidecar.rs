//! `candela sidecar`'s command line: the clap definition the binary parses with, its
//! validation, and [`SidecarFlags`], the typed values the operator turns into argv.

use std::path::PathBuf;

use clap::Args;

use crate::{env, ports};

/// Long names of the sidecar's flags (without `--`).
pub mod flag {
    pub const ENGINE_GRPC: &str = "engine-grpc";
    pub const LISTEN: &str = "listen";
    pub const METRICS_TOKEN: &str = "metrics-token";
    pub const PROFILES_DIR: &str = "profiles-dir";
    pub const ENGINE_PID: &str = "engine-pid";
    pub const STATS_INTERVAL_MS: &str = "stats-interval-ms";
}

/// `candela sidecar`.
#[derive(Debug, Clone, Args)]
pub struct SidecarArgs {
    /// The engine's gRPC endpoint (`candela serve --grpc-port`).
    #[arg(
        long = flag::ENGINE_GRPC,
        env = "CANDELA_SIDECAR_ENGINE_GRPC",
        default_value_t = format!("http://127.0.0.1:{}", ports::GRPC)
    )]
    pub engine_grpc: String,
    /// Address for /metrics and /profiles (`HOST:PORT`, or `:PORT` for all interfaces).
    #[arg(long = flag::LISTEN, env = "CANDELA_SIDECAR_LISTEN", default_value_t = format!("0.0.0.0:{}", ports::METRICS))]
    pub listen: String,
    /// Require `Authorization: Bearer <TOKEN>` on /metrics and /profiles.
    #[arg(long = flag::METRICS_TOKEN, env = env::METRICS_TOKEN, hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Directory the engine writes profiles to (a volume shared with the engine container).
    #[arg(
        long = flag::PROFILES_DIR,
        visible_alias = "profiler-dir",
        env = "CANDELA_SIDECAR_PROFILES_DIR"
    )]
    pub profiles_dir: Option<PathBuf>,
    /// PID of the engine process [default: the first `candela serve` found in /proc].
    #[arg(long = flag::ENGINE_PID, env = "CANDELA_SIDECAR_ENGINE_PID")]
    pub engine_pid: Option<u32>,
    /// Milliseconds between the engine's stats snapshots.
    #[arg(long = flag::STATS_INTERVAL_MS, env = "CANDELA_SIDECAR_STATS_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(10..))]
    pub stats_interval_ms: u32,
}

impl SidecarArgs {
    /// The listen address with `:PORT` expanded to all interfaces.
    pub fn listen_addr(&self) -> String {
        if self.listen.starts_with(':') {
            format!("0.0.0.0{}", self.listen)
        } else {
            self.listen.clone()
        }
    }

    /// Checks what needs no network.
    ///
    /// # Errors
    /// One line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.metrics_token.as_deref().is_some_and(str::is_empty) {
            return Err(format!(
                "--{} is empty (is the secret behind {} missing?)",
                flag::METRICS_TOKEN,
                env::METRICS_TOKEN
            ));
        }
        if !self.engine_grpc.contains("://") {
            return Err(format!(
                "--{} {:?} must be a URI like http://127.0.0.1:{}",
                flag::ENGINE_GRPC,
                self.engine_grpc,
                ports::GRPC
            ));
        }
        Ok(())
    }
}

/// The sidecar settings the operator sets, as typed values (the token travels in
/// [`env::METRICS_TOKEN`], never in argv).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarFlags {
    /// `--engine-grpc`.
    pub engine_grpc: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--profiles-dir`.
    pub profiles_dir: Option<PathBuf>,
}

impl SidecarFlags {
    /// The argv of the sidecar container: `sidecar` followed by the set flags.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec!["sidecar".to_owned()];
        for (name, value) in [
            (flag::ENGINE_GRPC, self.engine_grpc.clone()),
            (flag::LISTEN, self.listen.clone()),
            (
                flag::PROFILES_DIR,
                self.profiles_dir.as_ref().map(|p| p.display().to_string()),
            ),
        ] {
            if let Some(value) = value {
                args.push(format!("--{name}={value}"));
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{ProcessCli, ProcessCommand};

    fn sidecar(args: &[&str]) -> Result<SidecarArgs, clap::Error> {
        let argv = ["candela", "sidecar"].iter().chain(args).copied();
        ProcessCli::try_parse_from(argv).map(|cli| match cli.command {
            ProcessCommand::Sidecar(s) => s,
            other => panic!("parsed `sidecar` as {other:?}"),
        })
    }

    #[test]
    fn flags_and_defaults() {
        let a = sidecar(&[]).unwrap();
        assert_eq!(a.engine_grpc, "http://127.0.0.1:50051");
        assert_eq!(a.listen_addr(), "0.0.0.0:9090");
        assert_eq!(a.stats_interval_ms, 1000);
        assert!(a.metrics_token.is_none() && a.profiles_dir.is_none() && a.engine_pid.is_none());
        let a = sidecar(&[
            "--listen",
            ":9191",
            "--metrics-token",
            "t",
            "--engine-pid",
            "42",
        ])
        .unwrap();
        assert_eq!(a.listen_addr(), "0.0.0.0:9191");
        assert_eq!(
            (a.metrics_token.as_deref(), a.engine_pid),
            (Some("t"), Some(42))
        );
        assert!(sidecar(&["--stats-interval-ms", "5"]).is_err());
        let e = sidecar(&["--metrics-token", ""])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains(env::METRICS_TOKEN), "{e}");
        assert!(
            sidecar(&["--engine-grpc", "localhost:1"])
                .unwrap()
                .validate()
                .is_err()
        );
    }

    #[test]
    fn sidecar_flags_round_trip() {
        let f = SidecarFlags {
            engine_grpc: Some("http://127.0.0.1:1234".into()),
            listen: Some("0.0.0.0:9999".into()),
            profiles_dir: Some("/p".into()),
        };
        let a = match crate::parse_process_args(f.to_args()) {
            Ok(ProcessCommand::Sidecar(a)) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(a.engine_grpc, "http://127.0.0.1:1234");
        assert_eq!(a.listen, "0.0.0.0:9999");
        assert_eq!(a.profiles_dir, Some(PathBuf::from("/p")));
    }
}
