//! The gRPC edge: the Farm service (farmctl), the AgentLink service (bench-agent), the bearer-token
//! interceptor, and the one mapping of [`FarmError`](crate::core::FarmError) to a status. Messages are turned
//! into domain types here (with `nvfarm-proto`'s conversions) before the core sees them.

mod agent;
mod farm;
mod status;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Status};

pub use agent::AgentService;
pub use farm::FarmService;

use crate::auth::{Auth, Caller};

/// A server-streaming response.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A response stream fed by a task through a bounded channel. The stream ends when the task does, or when the
/// controller stops (so a shutdown never waits on a client that only listens).
pub fn spawn_stream<T, F, Fut>(farm: &crate::core::Farm, f: F) -> ResponseStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = f(tx);
    let stopping = farm.stopping();
    tokio::spawn(async move {
        tokio::select! {
            _ = task => {}
            _ = stopping => {}
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The tonic interceptor: identifies the caller from its headers and attaches it to the request.
pub fn intercept(auth: &Auth, mut req: Request<()>) -> Result<Request<()>, Status> {
    let md = req.metadata();
    let header = md.get("authorization").and_then(|v| v.to_str().ok());
    let user = md.get("x-nvfarm-user").and_then(|v| v.to_str().ok());
    let caller = auth
        .identify(header, user)
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    req.extensions_mut().insert(caller);
    Ok(req)
}

/// The caller the interceptor attached.
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("request without caller (interceptor missing)"))
}
