//! `candela sidecar`'s command line: the clap definition the binary parses with, its
//! validation, and [`SidecarFlags`], the typed values the operator turns into argv; and
//! [`LoraAdapterList`], the file the operator writes (a ConfigMap volume) and the sidecar
//! reads to keep the engine's LoRA adapters in step with `spec.loraAdapters`.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::tls::{TlsArgs, TlsFlags};
use crate::{env, lora, ports};

/// The sidecar's readiness path (open, like `/health`): 200 once the LoRA adapter list has
/// been applied to the engine once (always 200 without `--lora-adapters-file`), so a new
/// pod joins its Service only when it can serve its adapters.
pub const READY_PATH: &str = "/ready";

/// Long names of the sidecar's flags (without `--`).
pub mod flag {
    pub const ENGINE_GRPC: &str = "engine-grpc";
    pub const LISTEN: &str = "listen";
    pub const METRICS_TOKEN: &str = "metrics-token";
    pub const PROFILES_DIR: &str = "profiles-dir";
    pub const ENGINE_PID: &str = "engine-pid";
    pub const STATS_INTERVAL_MS: &str = "stats-interval-ms";
    pub const ENGINE_HTTP: &str = "engine-http";
    pub const ENGINE_API_KEY: &str = "engine-api-key";
    pub const LORA_ADAPTERS_FILE: &str = "lora-adapters-file";
    pub const LORA_SYNC_INTERVAL_MS: &str = "lora-sync-interval-ms";
    pub const ENGINE_CA_CERTS: &str = "engine-ca-certs";
    pub const ENGINE_SERVER_NAME: &str = "engine-server-name";
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
    /// The engine's HTTP API (`candela serve --port`), where LoRA adapters are loaded and
    /// unloaded.
    #[arg(
        long = flag::ENGINE_HTTP,
        env = "CANDELA_SIDECAR_ENGINE_HTTP",
        default_value_t = format!("http://127.0.0.1:{}", ports::HTTP)
    )]
    pub engine_http: String,
    /// The engine's `--api-key`, sent as `Authorization: Bearer` to its /v1 endpoints (the
    /// same variable the engine reads).
    #[arg(long = flag::ENGINE_API_KEY, env = env::API_KEY, hide_env_values = true)]
    pub engine_api_key: Option<String>,
    /// Keep the engine's loaded LoRA adapters equal to the list in this JSON file
    /// (`{"adapters": [{"name": .., "path": ..}]}`), re-read on every sync, so an updated
    /// ConfigMap volume loads and unloads adapters without restarting the engine. Needs
    /// the engine started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`.
    #[arg(long = flag::LORA_ADAPTERS_FILE, env = "CANDELA_SIDECAR_LORA_ADAPTERS_FILE")]
    pub lora_adapters_file: Option<PathBuf>,
    /// Milliseconds between LoRA syncs (read the file, list the engine's adapters, load
    /// and unload the difference).
    #[arg(long = flag::LORA_SYNC_INTERVAL_MS, env = "CANDELA_SIDECAR_LORA_SYNC_INTERVAL_MS",
          default_value_t = 5000, value_parser = clap::value_parser!(u32).range(100..))]
    pub lora_sync_interval_ms: u32,
    /// PEM CA certificates that sign the engine's certificate, for `https://` engine URIs
    /// [default: the system's roots].
    #[arg(long = flag::ENGINE_CA_CERTS, env = "CANDELA_SIDECAR_ENGINE_CA_CERTS", value_name = "PATH")]
    pub engine_ca_certs: Option<PathBuf>,
    /// The name the engine's certificate must carry [default: the host of the engine URIs];
    /// set it when the sidecar dials 127.0.0.1 and the certificate names the Service.
    #[arg(long = flag::ENGINE_SERVER_NAME, env = "CANDELA_SIDECAR_ENGINE_SERVER_NAME", value_name = "NAME")]
    pub engine_server_name: Option<String>,
    /// TLS on /metrics and /profiles. With --ssl-cert-reqs 1, /metrics and /profiles
    /// admit only clients with a certificate signed by --ssl-ca-certs (/health and /ready
    /// stay open for the kubelet's probes); with 2 the handshake itself requires one.
    #[command(flatten)]
    pub tls: TlsArgs,
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
        if self.engine_api_key.as_deref().is_some_and(str::is_empty) {
            return Err(format!(
                "--{} is empty (is the secret behind {} missing?)",
                flag::ENGINE_API_KEY,
                env::API_KEY
            ));
        }
        for (name, value, port) in [
            (flag::ENGINE_GRPC, &self.engine_grpc, ports::GRPC),
            (flag::ENGINE_HTTP, &self.engine_http, ports::HTTP),
        ] {
            if !value.contains("://") {
                return Err(format!(
                    "--{name} {value:?} must be a URI like http://127.0.0.1:{port}"
                ));
            }
        }
        let https = [&self.engine_grpc, &self.engine_http]
            .iter()
            .any(|uri| uri.starts_with("https://"));
        if !https {
            for (name, set) in [
                (flag::ENGINE_CA_CERTS, self.engine_ca_certs.is_some()),
                (flag::ENGINE_SERVER_NAME, self.engine_server_name.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "--{name} is only read with https:// engine URIs (--{} / --{})",
                        flag::ENGINE_GRPC,
                        flag::ENGINE_HTTP
                    ));
                }
            }
        }
        self.tls.validate()
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
    /// `--engine-http`.
    pub engine_http: Option<String>,
    /// `--lora-adapters-file`.
    pub lora_adapters_file: Option<PathBuf>,
    /// `--engine-ca-certs`.
    pub engine_ca_certs: Option<PathBuf>,
    /// `--engine-server-name`.
    pub engine_server_name: Option<String>,
    /// `--ssl-*`: TLS on /metrics and /profiles.
    pub tls: TlsFlags,
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
            (flag::ENGINE_HTTP, self.engine_http.clone()),
            (
                flag::LORA_ADAPTERS_FILE,
                self.lora_adapters_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
            ),
            (
                flag::ENGINE_CA_CERTS,
                self.engine_ca_certs
                    .as_ref()
                    .map(|p| p.display().to_string()),
            ),
            (flag::ENGINE_SERVER_NAME, self.engine_server_name.clone()),
        ] {
            if let Some(value) = value {
                args.push(format!("--{name}={value}"));
            }
        }
        self.tls.push_args(&mut args);
        args
    }
}

/// The LoRA adapters the engine should have loaded: what the operator writes from
/// `spec.loraAdapters` and `--lora-adapters-file` reads. Unknown fields are ignored, so an
/// older sidecar reads what a newer operator writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraAdapterList {
    /// Every adapter, by name.
    pub adapters: Vec<LoraAdapter>,
}

/// One adapter: the name requests select it by, and where the engine loads it from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LoraAdapter {
    /// The `model` requests name to use it (`lora_name` of `POST /v1/load_lora_adapter`).
    pub name: String,
    /// A PEFT directory inside the engine container, or `hf://org/name` (`lora_path`).
    pub path: String,
}

impl LoraAdapterList {
    /// Reads the file's JSON and checks every entry as `--lora-modules` entries are
    /// checked: valid names, given once, non-empty paths.
    ///
    /// # Errors
    /// One line naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let list: Self =
            serde_json::from_str(text).map_err(|e| format!("invalid LoRA adapter list: {e}"))?;
        list.check()?;
        Ok(list)
    }

    /// The checks of [`Self::parse`] on an in-memory list (the operator's, before writing).
    ///
    /// # Errors
    /// One line naming what is wrong.
    pub fn check(&self) -> Result<(), String> {
        lora::check_adapters(
            self.adapters
                .iter()
                .map(|a| (a.name.as_str(), a.path.as_str())),
        )
    }

    /// The file's text: pretty JSON with a trailing newline (what `kubectl get configmap`
    /// shows).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
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
        assert_eq!(a.engine_http, "http://127.0.0.1:8000");
        assert_eq!(a.lora_sync_interval_ms, 5000);
        assert!(a.lora_adapters_file.is_none());
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
        let e = sidecar(&["--engine-http", "localhost:1"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.starts_with("--engine-http"), "{e}");
        let e = sidecar(&["--engine-api-key", ""])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains(env::API_KEY), "{e}");
        assert!(sidecar(&["--lora-sync-interval-ms", "5"]).is_err());
        let e = sidecar(&["--engine-ca-certs", "/ca.crt"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.starts_with("--engine-ca-certs is only read with https://"),
            "{e}"
        );
        let e = sidecar(&["--ssl-certfile", "/c"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.starts_with("--ssl-certfile needs --ssl-keyfile"), "{e}");
    }

    #[test]
    fn lora_adapter_lists_round_trip_and_are_checked() {
        let list = LoraAdapterList {
            adapters: vec![
                LoraAdapter {
                    name: "sql".into(),
                    path: "/adapters/sql".into(),
                },
                LoraAdapter {
                    name: "chat".into(),
                    path: "hf://org/chat-lora".into(),
                },
            ],
        };
        assert_eq!(LoraAdapterList::parse(&list.to_json()).unwrap(), list);
        // Fields a newer operator may add are ignored.
        let newer = r#"{"adapters": [{"name": "a", "path": "/a", "scale": 2}], "v": 2}"#;
        assert_eq!(LoraAdapterList::parse(newer).unwrap().adapters.len(), 1);
        let twice = r#"{"adapters": [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]}"#;
        assert!(LoraAdapterList::parse(twice).unwrap_err().contains("twice"));
        let space = r#"{"adapters": [{"name": "a b", "path": "/a"}]}"#;
        assert!(
            LoraAdapterList::parse(space)
                .unwrap_err()
                .contains("whitespace")
        );
        let empty = r#"{"adapters": [{"name": "a", "path": " "}]}"#;
        assert!(
            LoraAdapterList::parse(empty)
                .unwrap_err()
                .contains("empty path")
        );
        assert!(LoraAdapterList::parse("[]").is_err());
    }

    #[test]
    fn sidecar_flags_round_trip() {
        let f = SidecarFlags {
            engine_grpc: Some("http://127.0.0.1:1234".into()),
            listen: Some("0.0.0.0:9999".into()),
            profiles_dir: Some("/p".into()),
            engine_http: Some("https://127.0.0.1:8001".into()),
            lora_adapters_file: Some("/etc/lora/adapters.json".into()),
            engine_ca_certs: Some("/tls/ca.crt".into()),
            engine_server_name: Some("svc.ns".into()),
            tls: TlsFlags {
                keyfile: Some("/tls/tls.key".into()),
                certfile: Some("/tls/tls.crt".into()),
                ca_certs: Some("/tls/ca.crt".into()),
                cert_reqs: crate::tls::ClientCertReqs::Optional,
            },
        };
        let a = match crate::parse_process_args(f.to_args()) {
            Ok(ProcessCommand::Sidecar(a)) => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(a.engine_grpc, "http://127.0.0.1:1234");
        assert_eq!(a.listen, "0.0.0.0:9999");
        assert_eq!(a.profiles_dir, Some(PathBuf::from("/p")));
        assert_eq!(a.engine_http, "https://127.0.0.1:8001");
        assert_eq!(a.engine_ca_certs, Some(PathBuf::from("/tls/ca.crt")));
        assert_eq!(a.engine_server_name.as_deref(), Some("svc.ns"));
        assert_eq!(a.tls.keyfile, Some(PathBuf::from("/tls/tls.key")));
        assert_eq!(a.tls.certfile, Some(PathBuf::from("/tls/tls.crt")));
        assert_eq!(a.tls.ca_certs, Some(PathBuf::from("/tls/ca.crt")));
        assert_eq!(a.tls.cert_reqs, 1);
        assert_eq!(
            a.lora_adapters_file,
            Some(PathBuf::from("/etc/lora/adapters.json"))
        );
    }
}
