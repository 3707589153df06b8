//! TLS for every Candela listener (the engine's HTTP and gRPC ports, the sidecar's
//! `/metrics`, the operator's webhook and metrics), defined once.
//!
//! - [`ServerTls`]: the PEM files of vLLM's `--ssl-keyfile`, `--ssl-certfile`,
//!   `--ssl-ca-certs` and `--ssl-cert-reqs` ([`candela_contract::tls::TlsArgs`]), loaded
//!   and checked at start, then re-read when they change: a rotated Kubernetes Secret
//!   reaches a running pod without a restart. New connections get the new certificate;
//!   open connections keep theirs (nothing is dropped). A half-written or mismatched set
//!   of files is logged and the previous certificate stays in use.
//! - [`Listener`]: a TCP listener that is plain or TLS, usable with `axum::serve` (it
//!   implements [`axum::serve::Listener`]) and, with the `tonic` feature, as tonic's
//!   incoming stream. Handshakes run off the accept loop, so a slow client delays no
//!   one; a plain-HTTP request on a TLS port gets `400` with one line saying to use
//!   `https://` instead of a reset.
//! - [`PeerInfo`]: the remote address and whether the client proved a certificate signed
//!   by `--ssl-ca-certs` (axum's `ConnectInfo`), for paths that only such clients may
//!   read (the sidecar's `/metrics`).

mod error;
mod listener;
mod server;

pub use candela_contract::tls::{ClientCertReqs, TlsArgs};
pub use error::Error;
pub use listener::{Alpn, Listener, PeerInfo, Stream};
pub use server::{RELOAD_INTERVAL, ServerTls};

#[cfg(test)]
mod tests;
