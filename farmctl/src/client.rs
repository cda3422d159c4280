//! Connecting to the controller, and turning its errors into exit codes.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use nvfarm_model::ExitCode;
use nvfarm_proto::client::{controller_endpoint, BearerAuth, CONNECT_TIMEOUT};
use nvfarm_proto::convert::WireError;
use nvfarm_proto::v1::farm_client::FarmClient;

/// A command's error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: ExitCode,
    /// What to tell the user.
    pub message: String,
}

impl CliError {
    /// Bad input or usage (exit 2).
    pub fn usage(m: impl std::fmt::Display) -> Self {
        CliError {
            code: ExitCode::Usage,
            message: m.to_string(),
        }
    }
    /// The farm's infrastructure failed (exit 3).
    pub fn infra(m: impl std::fmt::Display) -> Self {
        CliError {
            code: ExitCode::Infrastructure,
            message: m.to_string(),
        }
    }
}

impl From<Status> for CliError {
    fn from(s: Status) -> Self {
        let code = match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated => ExitCode::Usage,
            Code::DeadlineExceeded => ExitCode::TimedOut,
            _ => ExitCode::Infrastructure,
        };
        let what = match s.code() {
            Code::Unauthenticated => "authentication failed",
            Code::PermissionDenied => "permission denied",
            Code::Unavailable => "controller unavailable",
            Code::FailedPrecondition => "cannot do that now",
            Code::ResourceExhausted => "no capacity",
            _ => "controller refused",
        };
        // Transport failures carry their cause (a refused connection, a keep-alive timeout) in the source chain.
        let mut message = s.message().to_string();
        let mut cause = std::error::Error::source(&s);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            cause = c.source();
        }
        if s.code() == Code::Unavailable {
            message.push_str(" (is the controller running and answering at --controller?)");
        }
        CliError {
            code,
            message: format!("{what}: {message}"),
        }
    }
}

impl From<WireError> for CliError {
    fn from(e: WireError) -> Self {
        CliError::infra(format!(
            "the controller sent something this farmctl does not understand ({e}); are both the same version?"
        ))
    }
}

/// What commands return.
pub type Result<T> = std::result::Result<T, CliError>;

/// The Farm client with its bearer token.
pub type Client = FarmClient<InterceptedService<Channel, BearerAuth>>;

/// Connects to `url` (http:// or https://).
pub async fn connect(url: &str, token: Option<&str>) -> Result<Client> {
    let ep = controller_endpoint(url).map_err(|e| CliError::usage(format!("--controller: {e}")))?;
    let unreachable = |e: &dyn std::fmt::Display| {
        CliError::infra(format!("cannot reach the controller at {url}: {e} (is farm-controller running? set --controller or FARM_CONTROLLER)"))
    };
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, ep.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(unreachable(&e)),
        Err(_) => {
            return Err(unreachable(&format_args!(
                "no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    };
    let user = std::env::var("USER").ok();
    let auth = BearerAuth::new(token, user.as_deref()).map_err(CliError::usage)?;
    Ok(FarmClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        let code = |s: Status| CliError::from(s).code;
        assert_eq!(code(Status::invalid_argument("x")), ExitCode::Usage);
        assert_eq!(code(Status::unauthenticated("x")), ExitCode::Usage);
        assert_eq!(
            code(Status::failed_precondition("no rig matches")),
            ExitCode::Infrastructure
        );
        assert_eq!(code(Status::unavailable("down")), ExitCode::Infrastructure);
        assert_eq!(code(Status::deadline_exceeded("slow")), ExitCode::TimedOut);
    }
}
