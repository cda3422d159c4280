//! The one place a farm error becomes a gRPC status.

use tonic::Status;

use crate::auth::AuthError;
use crate::core::FarmError;

impl From<FarmError> for Status {
    fn from(e: FarmError) -> Self {
        let m = e.to_string();
        match e {
            FarmError::NotFound(_) => Status::not_found(m),
            FarmError::PermissionDenied(_) => Status::permission_denied(m),
            FarmError::InvalidArgument(_) => Status::invalid_argument(m),
            FarmError::FailedPrecondition(_) => Status::failed_precondition(m),
            FarmError::Busy(_) => Status::resource_exhausted(m),
            FarmError::Conflict(_) => Status::already_exists(m),
            FarmError::Superseded(_) => Status::aborted(m),
            FarmError::Store(_) => Status::unavailable(m),
        }
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
            _ => Status::unauthenticated(e.to_string()),
        }
    }
}

/// A message that did not decode.
pub(super) fn wire(e: nvfarm_proto::convert::WireError) -> Status {
    Status::invalid_argument(e.to_string())
}
