//! Runs the controller: gRPC (Farm + AgentLink, with auth), the HTTP dashboard, and the periodic health tick,
//! until shutdown is requested.

use std::future::Future;
use std::sync::Arc;

use tonic::transport::{Identity, Server, ServerTlsConfig};

use nvfarm_proto::v1::agent_link_server::AgentLinkServer;
use nvfarm_proto::v1::farm_server::FarmServer;

use crate::auth::Auth;
use crate::config::Config;
use crate::service_agent::AgentService;
use crate::service_farm::FarmService;
use crate::state::Farm;

/// Serves until `shutdown` completes. Binding errors are returned before anything is served.
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    cfg.check_exposure().map_err(anyhow::Error::msg)?;
    let farm = Farm::open(cfg.clone()).await?;
    let auth = Auth::new(cfg.tokens.clone());
    let grpc_listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (gRPC): {e}", cfg.listen))?;
    let http_listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (HTTP): {e}", cfg.http))?;
    tracing::info!(grpc = %grpc_listener.local_addr()?, http = %http_listener.local_addr()?, data = %cfg.data_dir.display(), tokens = cfg.tokens.len(), "farm-controller serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let tick_farm = farm.clone();
    let mut tick_stop = stop_rx.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(500));
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
    let http = axum::serve(http_listener, crate::http::router(farm.clone()))
        .with_graceful_shutdown(async move {
            let _ = http_stop.changed().await;
        });
    let http_task = tokio::spawn(async move { http.await });

    let a1 = auth.clone();
    let a2 = auth.clone();
    use tonic::service::interceptor::InterceptedService;
    let farm_svc = InterceptedService::new(
        FarmServer::new(FarmService { farm: farm.clone() }).max_decoding_message_size(8 << 20),
        move |r| a1.intercept(r),
    );
    let agent_svc = InterceptedService::new(
        AgentLinkServer::new(AgentService { farm: farm.clone() })
            .max_decoding_message_size(8 << 20),
        move |r| a2.intercept(r),
    );
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    if let Some(tls) = &cfg.tls {
        let cert = std::fs::read(&tls.cert)
            .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", tls.cert.display()))?;
        let key = std::fs::read(&tls.key)
            .map_err(|e| anyhow::anyhow!("TLS key {}: {e}", tls.key.display()))?;
        builder =
            builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let mut grpc_stop = stop_rx.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
    builder
        .add_service(farm_svc)
        .add_service(agent_svc)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stop.changed().await;
        })
        .await?;
    ticker.abort();
    let _ = http_task.await;
    // Everything acknowledged was flushed when it was acknowledged; this is belt and braces.
    farm.store.flush()?;
    tracing::info!("farm-controller stopped");
    let _ = Arc::strong_count(&farm);
    Ok(())
}
