//! What every client of the controller shares (farmctl, bench-agent): the endpoint and the bearer token.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// How long connecting may take, and how long a connected controller may leave a keep-alive ping unanswered
/// before the connection counts as dead (so a controller that accepts but never answers, or stops answering,
/// fails within seconds, not minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The controller's URL with its scheme: `host:port` means `http://host:port`; other schemes are refused.
pub fn controller_url(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err(
            "the controller address is empty: give http://HOST:PORT (default port 7700)".into(),
        );
    }
    match url.split_once("://") {
        None => Ok(format!("http://{url}")),
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(url.to_string()),
        Some((scheme, _)) => Err(format!(
            "'{url}': unsupported scheme {scheme}:// (use http://HOST:PORT, https://HOST:PORT or HOST:PORT)"
        )),
    }
}

/// The controller endpoint a client connects to: timeouts and keep-alives, and for `https://` URLs TLS trusting
/// the system roots plus the lab CA in the PEM file named by `FARM_CA`. `url` may leave out `http://`. The error
/// says which part of the setup is wrong.
pub fn controller_endpoint(url: &str) -> Result<Endpoint, String> {
    let url = controller_url(url)?;
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("invalid controller URL '{url}': {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        // A lab's controller usually has a certificate from the lab's own CA.
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Ok(ca) = std::env::var("FARM_CA") {
            let pem = std::fs::read(&ca).map_err(|e| format!("FARM_CA {ca}: {e}"))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls).map_err(|e| format!("TLS setup: {e}"))?;
    }
    Ok(ep)
}

/// Adds `authorization: Bearer <token>` (and, without a token, the user's name for a tokenless controller's
/// records) to every request.
#[derive(Clone, Debug, Default)]
pub struct BearerAuth {
    token: Option<MetadataValue<Ascii>>,
    user: Option<MetadataValue<Ascii>>,
}

impl BearerAuth {
    /// Auth for `token` (none: the controller has no tokens configured), naming the caller `user` where the
    /// controller records names without tokens.
    pub fn new(token: Option<&str>, user: Option<&str>) -> Result<Self, String> {
        let token = token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    "the token contains characters that cannot go in a header".to_string()
                })
            })
            .transpose()?;
        let user = user.and_then(|u| MetadataValue::try_from(u).ok());
        Ok(BearerAuth { token, user })
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        if let Some(u) = &self.user {
            req.metadata_mut().insert("x-nvfarm-user", u.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_address_without_a_scheme_is_http() {
        assert_eq!(controller_url("farm:7700").unwrap(), "http://farm:7700");
        assert_eq!(
            controller_url("https://farm:7700").unwrap(),
            "https://farm:7700"
        );
        let e = controller_url("grpc://farm:7700").unwrap_err();
        assert!(e.contains("unsupported scheme grpc://"), "{e}");
        assert!(controller_endpoint("127.0.0.1:7700").is_ok());
    }
}
