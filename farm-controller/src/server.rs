//! Runs the controller: gRPC (Farm + AgentLink, with auth), the HTTP side, and the periodic tick, until
//! shutdown is requested.

use std::future::Future;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use nvfarm_proto::v1::agent_link_server::AgentLinkServer;
use nvfarm_proto::v1::farm_server::FarmServer;

use crate::auth::Auth;
use crate::config::Config;
use crate::core::{Farm, FarmError};
use crate::grpc::{intercept, AgentService, FarmService};

/// Why the controller could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot be served as it is (e.g. no tokens but a non-loopback address).
    #[error("{0}")]
    Config(String),
    /// An address cannot be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// gRPC or HTTP.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The store failed.
    #[error(transparent)]
    Farm(#[from] FarmError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// How long a stop waits for calls in flight before cutting them.
const STOP_GRACE: Duration = Duration::from_millis(1500);

/// Serves until `shutdown` completes. Binding errors are returned before anything is served.
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    cfg.check_exposure().map_err(ServeError::Config)?;
    let farm = Farm::open(cfg.clone()).await?;
    let auth = Auth::new(cfg.tokens.clone());
    let bind = |addr, what| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, what, source })
    };
    let grpc_listener = bind(cfg.listen, "gRPC").await?;
    let http_listener = bind(cfg.http, "HTTP").await?;
    tracing::info!(
        grpc = %cfg.listen,
        http = %cfg.http,
        data = %cfg.data_dir.display(),
        tokens = cfg.tokens.len(),
        "farm-controller serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping_farm = farm.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: closing agent sessions and client streams");
        stopping_farm.shut_down().await;
        let _ = stop_tx.send(true);
    });

    tokio::spawn(crate::notify::run(farm.clone(), cfg.webhooks.clone()));
    let stats = crate::stats::Stats::default();
    tokio::spawn(crate::stats::run(farm.clone(), stats.clone()));

    let tick_farm = farm.clone();
    let mut tick_stop = stop_rx.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Err(e) = tick_farm.tick().await {
                        tracing::error!("periodic health tick failed: {e}");
                    }
                }
                _ = tick_stop.changed() => return,
            }
        }
    });

    let mut http_stop = stop_rx.clone();
    let http_listener = axum::serve::ListenerExt::tap_io(http_listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY on an HTTP connection: {e}");
        }
    });
    let http = axum::serve(http_listener, crate::http::router(farm.clone(), stats))
        .with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        });
    let http_task = tokio::spawn(async move { http.await });

    let (a1, a2) = (auth.clone(), auth);
    let farm_svc = InterceptedService::new(
        FarmServer::new(FarmService { farm: farm.clone() }).max_decoding_message_size(8 << 20),
        move |r| intercept(&a1, r),
    );
    let agent_svc = InterceptedService::new(
        AgentLinkServer::new(AgentService { farm: farm.clone() })
            .max_decoding_message_size(8 << 20),
        move |r| intercept(&a2, r),
    );
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &cfg.tls {
        let cert = std::fs::read(&tls.cert)
            .map_err(|e| ServeError::Tls(format!("certificate {}: {e}", tls.cert.display())))?;
        let key = std::fs::read(&tls.key)
            .map_err(|e| ServeError::Tls(format!("key {}: {e}", tls.key.display())))?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let mut grpc_stop = stop_rx.clone();
    let mut deadline_stop = stop_rx.clone();
    let incoming = no_delay(grpc_listener);
    let grpc = builder
        .add_service(farm_svc)
        .add_service(agent_svc)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stop.changed().await;
        });
    // A graceful stop waits for calls in flight, but never long: whatever still runs after STOP_GRACE is cut.
    let cut = async move {
        let _ = deadline_stop.changed().await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        r = grpc => r?,
        _ = cut => tracing::warn!("calls still running {STOP_GRACE:?} after the stop; cutting them"),
    }
    ticker.abort();
    let _ = tokio::time::timeout(STOP_GRACE, http_task).await;
    // Everything acknowledged was flushed when it was acknowledged; this is belt and braces.
    farm.flush()?;
    tracing::info!("farm-controller stopped");
    Ok(())
}

/// The accepted connections of `listener`, each with `TCP_NODELAY` set. tonic leaves an incoming stream's sockets
/// as they are, and with Nagle on, a small reply waits for the client's delayed ACK: ~40 ms on every call.
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let tcp = conn?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY on a gRPC connection: {e}");
        }
        Ok(tcp)
    })
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_the_peers_ack() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(super::no_delay(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY on the accepted socket"
        );
    }
}
