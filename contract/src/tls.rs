//! TLS flags, shared by every Candela listener: vLLM's `--ssl-keyfile`, `--ssl-certfile`,
//! `--ssl-ca-certs` and `--ssl-cert-reqs` ([`TlsArgs`], flattened into `candela serve` and
//! `candela sidecar`), and [`TlsFlags`], the typed values the operator turns into argv.
//!
//! The files are PEM and are re-read when they change, so a rotated Secret reaches a
//! running pod without a restart (the listeners live in the `candela-tls` crate).

use std::path::PathBuf;

use clap::Args;

/// Long names of the TLS flags (without `--`).
pub mod flag {
    pub const SSL_KEYFILE: &str = "ssl-keyfile";
    pub const SSL_CERTFILE: &str = "ssl-certfile";
    pub const SSL_CA_CERTS: &str = "ssl-ca-certs";
    pub const SSL_CERT_REQS: &str = "ssl-cert-reqs";
}

/// What a TLS listener asks of clients: Python's `ssl.CERT_*` values, as vLLM's
/// `--ssl-cert-reqs` takes them (0, 1, 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientCertReqs {
    /// 0: no client certificate is asked for.
    #[default]
    None,
    /// 1: asked for and verified against `--ssl-ca-certs` when sent; connections without
    /// one are accepted (the sidecar then admits them to its open paths only).
    Optional,
    /// 2: the handshake fails without a certificate signed by `--ssl-ca-certs`.
    Required,
}

impl ClientCertReqs {
    /// The number `--ssl-cert-reqs` takes.
    pub fn as_int(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Optional => 1,
            Self::Required => 2,
        }
    }

    fn from_int(value: u8) -> Self {
        match value {
            0 => Self::None,
            1 => Self::Optional,
            _ => Self::Required,
        }
    }
}

/// The TLS flags of a listener.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// PEM private key: with --ssl-certfile, the listeners speak HTTPS (and gRPC over TLS)
    /// only. Re-read when the file changes.
    #[arg(long = flag::SSL_KEYFILE, env = "CANDELA_SSL_KEYFILE", value_name = "PATH")]
    pub keyfile: Option<PathBuf>,
    /// PEM certificate chain, leaf first. Re-read when the file changes.
    #[arg(long = flag::SSL_CERTFILE, env = "CANDELA_SSL_CERTFILE", value_name = "PATH")]
    pub certfile: Option<PathBuf>,
    /// PEM CA certificates that sign the client certificates admitted (with
    /// --ssl-cert-reqs 1 or 2).
    #[arg(long = flag::SSL_CA_CERTS, env = "CANDELA_SSL_CA_CERTS", value_name = "PATH")]
    pub ca_certs: Option<PathBuf>,
    /// Client certificates: 0 none, 1 optional (verified when sent), 2 required (Python's
    /// ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED, as vLLM).
    #[arg(long = flag::SSL_CERT_REQS, env = "CANDELA_SSL_CERT_REQS", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub cert_reqs: u8,
}

impl TlsArgs {
    /// Whether the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.certfile.is_some()
    }

    /// `--ssl-cert-reqs` as a value.
    pub fn client_cert_reqs(&self) -> ClientCertReqs {
        ClientCertReqs::from_int(self.cert_reqs)
    }

    /// Checks that the flags go together.
    ///
    /// # Errors
    /// One line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.keyfile, &self.certfile) {
            (Some(_), None) => {
                return Err(format!(
                    "--{} needs --{}",
                    flag::SSL_KEYFILE,
                    flag::SSL_CERTFILE
                ));
            }
            (None, Some(_)) => {
                return Err(format!(
                    "--{} needs --{}",
                    flag::SSL_CERTFILE,
                    flag::SSL_KEYFILE
                ));
            }
            _ => {}
        }
        let client = self.client_cert_reqs() != ClientCertReqs::None;
        if client && !self.enabled() {
            return Err(format!(
                "--{} {} needs --{} and --{}",
                flag::SSL_CERT_REQS,
                self.cert_reqs,
                flag::SSL_CERTFILE,
                flag::SSL_KEYFILE
            ));
        }
        match (client, &self.ca_certs) {
            (true, None) => Err(format!(
                "--{} {} needs --{} (the CA that signs client certificates)",
                flag::SSL_CERT_REQS,
                self.cert_reqs,
                flag::SSL_CA_CERTS
            )),
            (false, Some(_)) => Err(format!(
                "--{} is only read with --{} 1 or 2",
                flag::SSL_CA_CERTS,
                flag::SSL_CERT_REQS
            )),
            _ => Ok(()),
        }
    }
}

/// TLS settings the operator sets, as typed values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    /// `--ssl-keyfile`.
    pub keyfile: Option<PathBuf>,
    /// `--ssl-certfile`.
    pub certfile: Option<PathBuf>,
    /// `--ssl-ca-certs`.
    pub ca_certs: Option<PathBuf>,
    /// `--ssl-cert-reqs` (left out when [`ClientCertReqs::None`]).
    pub cert_reqs: ClientCertReqs,
}

impl TlsFlags {
    /// Appends the set flags as `--flag=value`.
    pub fn push_args(&self, args: &mut Vec<String>) {
        for (name, path) in [
            (flag::SSL_KEYFILE, &self.keyfile),
            (flag::SSL_CERTFILE, &self.certfile),
            (flag::SSL_CA_CERTS, &self.ca_certs),
        ] {
            if let Some(path) = path {
                args.push(format!("--{name}={}", path.display()));
            }
        }
        if self.cert_reqs != ClientCertReqs::None {
            args.push(format!(
                "--{}={}",
                flag::SSL_CERT_REQS,
                self.cert_reqs.as_int()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn parse(args: &[&str]) -> Result<TlsArgs, String> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.tls.validate()?;
        Ok(cli.tls)
    }

    #[test]
    fn flags_go_together() {
        let off = parse(&[]).unwrap();
        assert!(!off.enabled());
        assert_eq!(off.client_cert_reqs(), ClientCertReqs::None);
        let on = parse(&["--ssl-keyfile", "k", "--ssl-certfile", "c"]).unwrap();
        assert!(on.enabled());
        let mtls = parse(&[
            "--ssl-keyfile",
            "k",
            "--ssl-certfile",
            "c",
            "--ssl-ca-certs",
            "ca",
            "--ssl-cert-reqs",
            "2",
        ])
        .unwrap();
        assert_eq!(mtls.client_cert_reqs(), ClientCertReqs::Required);

        for (args, start) in [
            (
                &["--ssl-keyfile", "k"][..],
                "--ssl-keyfile needs --ssl-certfile",
            ),
            (
                &["--ssl-certfile", "c"][..],
                "--ssl-certfile needs --ssl-keyfile",
            ),
            (
                &["--ssl-cert-reqs", "1"][..],
                "--ssl-cert-reqs 1 needs --ssl-certfile",
            ),
            (
                &[
                    "--ssl-keyfile",
                    "k",
                    "--ssl-certfile",
                    "c",
                    "--ssl-cert-reqs",
                    "2",
                ][..],
                "--ssl-cert-reqs 2 needs --ssl-ca-certs",
            ),
            (
                &[
                    "--ssl-keyfile",
                    "k",
                    "--ssl-certfile",
                    "c",
                    "--ssl-ca-certs",
                    "ca",
                ][..],
                "--ssl-ca-certs is only read with",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.starts_with(start), "{args:?}: {e}");
        }
        assert!(parse(&["--ssl-cert-reqs", "3"]).is_err());
    }

    #[test]
    fn typed_flags_round_trip() {
        for reqs in [
            ClientCertReqs::None,
            ClientCertReqs::Optional,
            ClientCertReqs::Required,
        ] {
            let flags = TlsFlags {
                keyfile: Some("/tls/tls.key".into()),
                certfile: Some("/tls/tls.crt".into()),
                ca_certs: (reqs != ClientCertReqs::None).then(|| "/tls/ca.crt".into()),
                cert_reqs: reqs,
            };
            let mut args = Vec::new();
            flags.push_args(&mut args);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let a = parse(&refs).unwrap();
            let back = TlsFlags {
                keyfile: a.keyfile.clone(),
                certfile: a.certfile.clone(),
                ca_certs: a.ca_certs.clone(),
                cert_reqs: a.client_cert_reqs(),
            };
            assert_eq!(back, flags);
        }
    }
}
