//! Endpoints and channels: parsing `host:port` / `http://host:port`, and opening lazily connected
//! tonic channels through our own TCP connector.
//!
//! Why our own connector: the failover rule needs to know whether a failed write *certainly never
//! reached a server*. tonic turns any connector error into `Unavailable` with the connector
//! error's text, but a server can also answer `Unavailable` after applying a write (etcd's
//! "request timed out"). Our connector's errors start with [`NOT_CONNECTED_PREFIX`], so
//! [`is_not_connected`] can tell them apart; nothing else produces that text.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::ClientError;

/// Connection settings shared by every endpoint of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline for one request on one endpoint (also sent to the server as `grpc-timeout`).
    pub request_timeout: Duration,
    /// Deadline for establishing a TCP connection to one endpoint.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// The first words of every error our connector produces; see the module docs.
pub const NOT_CONNECTED_PREFIX: &str = "beacon-client: could not connect";

/// Whether `status` came from our connector, i.e. the request was never written to a socket.
pub fn is_not_connected(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().starts_with(NOT_CONNECTED_PREFIX)
}

/// The `http://host:port` URI for an endpoint given as `host:port` or with an `http://` scheme.
pub fn endpoint_uri(endpoint: &str) -> Result<Uri, ClientError> {
    let invalid = |reason: String| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let text = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let uri: Uri = text.parse().map_err(|error| invalid(format!("{error}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            "only http:// endpoints are supported (no TLS)".into(),
        ));
    }
    match uri.authority() {
        Some(authority) if authority.port_u16().is_some() => Ok(uri),
        _ => Err(invalid("expected host:port".into())),
    }
}

/// A channel to `endpoint` that connects on first use and reconnects after failures. Every
/// clone shares one HTTP/2 connection; call again for an independent connection (the bench does).
pub fn open_channel(endpoint: &str, options: &ClientOptions) -> Result<Channel, ClientError> {
    let uri = endpoint_uri(endpoint)?;
    let connect_timeout = options.connect_timeout;
    let connector = tower::service_fn(move |uri: Uri| connect(uri, connect_timeout));
    Ok(Endpoint::from(uri)
        .tcp_nodelay(true)
        .connect_with_connector_lazy(connector))
}

/// A TCP connection failure; its text starts with [`NOT_CONNECTED_PREFIX`].
#[derive(Debug)]
struct NotConnected(String);

impl std::fmt::Display for NotConnected {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for NotConnected {}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, NotConnected>> + Send>>;

fn connect(uri: Uri, connect_timeout: Duration) -> ConnectFuture {
    Box::pin(async move {
        let address = uri
            .authority()
            .map(|authority| authority.as_str().to_string())
            .unwrap_or_default();
        let failed = |cause: String| NotConnected(format!("{NOT_CONNECTED_PREFIX}: {cause}"));
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(&address)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(failed(error.to_string())),
            Err(_) => return Err(failed(format!("timed out after {connect_timeout:?}"))),
        };
        stream
            .set_nodelay(true)
            .map_err(|error| failed(error.to_string()))?;
        Ok(TokioIo::new(stream))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_host_port_and_http_urls() {
        assert_eq!(
            endpoint_uri("127.0.0.1:2379").expect("valid").to_string(),
            "http://127.0.0.1:2379/"
        );
        assert!(endpoint_uri("http://localhost:2379").is_ok());
        assert!(endpoint_uri("https://localhost:2379").is_err());
        assert!(endpoint_uri("localhost").is_err());
        assert!(endpoint_uri("not a url").is_err());
    }
}
