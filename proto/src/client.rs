//! What every client of the controller shares (farmctl, bench-agent): the endpoint and the bearer token.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// The controller endpoint a client connects to: timeouts and keep-alives, and for `https://` URLs TLS trusting
/// the system roots plus the lab CA in the PEM file named by `FARM_CA`. The error says which part of the setup
/// is wrong.
pub fn controller_endpoint(url: &str) -> Result<Endpoint, String> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid controller URL '{url}': {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
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
