//! [`Listener`]: plain TCP or TLS behind one type, for `axum::serve` and tonic.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{Error, ServerTls};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;

/// The application protocol a TLS listener offers (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/1.1 (the OpenAI API, /metrics, webhooks).
    Http1,
    /// HTTP/2 only (gRPC).
    Grpc,
}

impl Alpn {
    fn protocols(self) -> &'static [&'static [u8]] {
        match self {
            Self::Http1 => &[b"http/1.1"],
            Self::Grpc => &[b"h2"],
        }
    }
}

/// A listening socket that hands out plain or TLS [`Stream`]s.
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Plain(TcpListener),
    /// Handshakes run in a task of their own; finished ones arrive here.
    Tls {
        accepted: mpsc::Receiver<(Stream, SocketAddr)>,
        task: tokio::task::AbortHandle,
    },
}

impl Listener {
    /// Binds `addr` (`HOST:PORT`); with `tls`, every connection must complete a TLS
    /// handshake first, and the files are watched for changes from now on.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: &str, tls: Option<&ServerTls>, alpn: Alpn) -> Result<Self, Error> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Self::from_tcp(tcp, tls, alpn)
    }

    /// Wraps a bound socket (see [`Listener::bind`]).
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn from_tcp(tcp: TcpListener, tls: Option<&ServerTls>, alpn: Alpn) -> Result<Self, Error> {
        let local = tcp.local_addr().map_err(|source| Error::Bind {
            addr: "listener".into(),
            source,
        })?;
        let Some(tls) = tls else {
            return Ok(Self {
                local,
                inner: Inner::Plain(tcp),
            });
        };
        tls.watch();
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let task = tokio::spawn(accept_loop(tcp, tls.clone(), alpn, tx)).abort_handle();
        Ok(Self {
            local,
            inner: Inner::Tls { accepted, task },
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether connections speak TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls { .. })
    }

    /// The next connection (TLS ones with their handshake done). Errors of single
    /// connections are logged, never returned: the listener keeps serving.
    pub async fn accept(&mut self) -> (Stream, SocketAddr) {
        match &mut self.inner {
            Inner::Plain(tcp) => loop {
                match tcp.accept().await {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        return (Stream::Plain(stream), addr);
                    }
                    Err(e) => accept_error(&e).await,
                }
            },
            Inner::Tls { accepted, .. } => match accepted.recv().await {
                Some(next) => next,
                // The accept task never ends on its own; if it died, stop accepting.
                None => std::future::pending().await,
            },
        }
    }

    /// The connections as tonic's incoming stream (`serve_with_incoming`).
    #[cfg(feature = "tonic")]
    pub fn into_incoming(self) -> impl futures::Stream<Item = io::Result<Stream>> + Send {
        futures::stream::unfold(self, |mut listener| async move {
            let (stream, _) = listener.accept().await;
            Some((Ok(stream), listener))
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Inner::Tls { task, .. } = &self.inner {
            task.abort();
        }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: ServerTls,
    alpn: Alpn,
    tx: mpsc::Sender<(Stream, SocketAddr)>,
) {
    let mut cache = None;
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(next) => next,
            Err(e) => {
                accept_error(&e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let config = match tls.config(alpn.protocols(), &mut cache) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("TLS configuration: {e}");
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, config)).await {
                Ok(Ok(Some(stream))) => {
                    let _ = tx.send((Stream::Tls(Box::new(stream)), addr)).await;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// The TLS handshake; a client that speaks plain HTTP instead is told so (`None`).
async fn handshake(
    mut stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    // 0x16 starts every TLS handshake record; an ASCII letter starts an HTTP method.
    if stream.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        let body = "This port speaks HTTPS (TLS): use https:// instead of http://.\n";
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        return Ok(None);
    }
    TlsAcceptor::from(config).accept(stream).await.map(Some)
}

/// Out of file descriptors and the like: wait a little instead of spinning.
async fn accept_error(e: &io::Error) {
    tracing::warn!("accepting a connection: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the client proved a certificate signed by `--ssl-ca-certs` (unverified
    /// certificates fail the handshake, so a present one is a verified one).
    pub fn has_client_cert(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.get_ref().1.peer_certificates().is_some(),
        }
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        Listener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Who is on the other end of a connection (axum's `ConnectInfo<PeerInfo>`).
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The client proved a certificate signed by `--ssl-ca-certs`.
    pub client_cert: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>>
    for PeerInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        Self {
            remote: *stream.remote_addr(),
            client_cert: stream.io().has_client_cert(),
        }
    }
}

#[cfg(feature = "tonic")]
impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}
