//! Connecting to the controller, attaching the bearer token, and turning gRPC errors into exit codes.

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use nvfarm_proto::v1::farm_client::FarmClient;

pub const EXIT_PASSED: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INFRA: u8 = 3;
pub const EXIT_TIMEOUT: u8 = 4;

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(m: impl std::fmt::Display) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: m.to_string(),
        }
    }
    pub fn infra(m: impl std::fmt::Display) -> Self {
        Failure {
            code: EXIT_INFRA,
            message: m.to_string(),
        }
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        let code = match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated => EXIT_USAGE,
            Code::DeadlineExceeded => EXIT_TIMEOUT,
            _ => EXIT_INFRA,
        };
        let what = match s.code() {
            Code::Unauthenticated => "authentication failed",
            Code::PermissionDenied => "permission denied",
            Code::Unavailable => "controller unavailable",
            Code::FailedPrecondition => "cannot do that now",
            Code::ResourceExhausted => "no capacity",
            _ => "controller refused",
        };
        Failure {
            code,
            message: format!("{what}: {}", s.message()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

#[derive(Clone, Debug)]
pub struct Auth {
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    user: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        if let Some(u) = &self.user {
            req.metadata_mut().insert("x-nvfarm-user", u.clone());
        }
        Ok(req)
    }
}

pub type Client = FarmClient<InterceptedService<Channel, Auth>>;

/// Connects to `url` (http:// or https://).
pub async fn connect(url: &str, token: Option<&str>) -> Result<Client> {
    let ep = nvfarm_proto::controller_endpoint(url)
        .map_err(|e| Failure::usage(format!("--controller: {e}")))?;
    let channel = ep

        .connect()
        .await
        .map_err(|e| Failure::infra(format!("cannot reach the controller at {url}: {e} (is farm-controller running? set --controller or FARM_CONTROLLER)")))?;
    let token = match token {
        Some(t) => Some(MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
            Failure::usage("the token contains characters that cannot go in a header")
        })?),
        None => None,
    };
    let user = std::env::var("USER")
        .ok()
        .and_then(|u| MetadataValue::try_from(u).ok());
    Ok(FarmClient::with_interceptor(channel, Auth { token, user })
        .max_decoding_message_size(64 << 20))
}

/// `k=v,k2=v2` → map.
pub fn parse_labels(
    s: &str,
) -> std::result::Result<std::collections::BTreeMap<String, String>, String> {
    let mut m = std::collections::BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            format!("invalid label '{part}': expected key=value (e.g. model=X1-1T,site=lab-a)")
        })?;
        if k.trim().is_empty() {
            return Err(format!("invalid label '{part}': empty key"));
        }
        m.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_status_codes() {
        assert_eq!(parse_labels("model=X1,site=lab").unwrap().len(), 2);
        assert!(parse_labels("model").unwrap_err().contains("key=value"));
        assert_eq!(
            Failure::from(Status::invalid_argument("x")).code,
            EXIT_USAGE
        );
        assert_eq!(Failure::from(Status::unauthenticated("x")).code, EXIT_USAGE);
        assert_eq!(
            Failure::from(Status::failed_precondition("no rig matches")).code,
            EXIT_INFRA
        );
        assert_eq!(Failure::from(Status::unavailable("down")).code, EXIT_INFRA);
    }
}
