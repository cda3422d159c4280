//! Who is calling, and what their role lets them do.
//!
//! With tokens configured, a caller presents a bearer token; [`Auth::identify`] finds it in the config and
//! names the [`Caller`]. Without tokens (loopback only, see [`crate::config::Config`]) every caller is an admin
//! named by what it says it is (or "local"). The gRPC interceptor that reads the headers lives in
//! [`crate::grpc`].

use crate::config::{Role, TokenEntry};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its name (the token's name, or the user a tokenless client says it is).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Caller {
    /// Admins may act on everyone's leases, jobs and rigs.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why a caller is not let in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, but the controller needs one.
    #[error("no token: pass --token or set FARM_TOKEN (authorization: Bearer <token>)")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("malformed authorization header: expected 'Bearer <token>'")]
    Malformed,
    /// The token is not in the config.
    #[error("unknown token: check --token / FARM_TOKEN against the controller's config")]
    Unknown,
    /// The caller's role does not allow this.
    #[error("{what} needs role {needs} (or admin); '{name}' has role {has}")]
    Forbidden {
        /// What was attempted.
        what: String,
        /// The roles that may.
        needs: String,
        /// The caller.
        name: String,
        /// The caller's role.
        has: &'static str,
    },
}

/// The configured tokens.
#[derive(Clone, Debug)]
pub struct Auth {
    tokens: Vec<TokenEntry>,
}

impl Auth {
    /// Checks callers against `tokens` (empty: no authentication, loopback only).
    pub fn new(tokens: Vec<TokenEntry>) -> Self {
        Auth { tokens }
    }

    /// The caller presenting `authorization` (the header's value), who says it is `user` when no tokens are
    /// configured.
    pub fn identify(
        &self,
        authorization: Option<&str>,
        user: Option<&str>,
    ) -> Result<Caller, AuthError> {
        if self.tokens.is_empty() {
            return Ok(Caller {
                name: user.unwrap_or("local").to_string(),
                role: Role::Admin,
            });
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header.strip_prefix("Bearer ").ok_or(AuthError::Malformed)?;
        // Compare every entry in full so the time taken does not reveal how much of a token matched.
        let mut found = None;
        for t in &self.tokens {
            let eq = t.token.len() == token.len()
                && t.token
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if eq {
                found = Some(t);
            }
        }
        found
            .map(|t| Caller {
                name: t.name.clone(),
                role: t.role,
            })
            .ok_or(AuthError::Unknown)
    }
}

/// Refuses callers whose role is not in `allowed` (admins may do anything).
pub fn require(c: &Caller, allowed: &[Role], what: &str) -> Result<(), AuthError> {
    if c.role == Role::Admin || allowed.contains(&c.role) {
        Ok(())
    } else {
        Err(AuthError::Forbidden {
            what: what.to_string(),
            needs: allowed
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
            name: c.name.clone(),
            has: c.role.as_str(),
        })
    }
}

/// Roles that act as farm clients (reserve, run, sweep).
pub const CLIENTS: &[Role] = &[Role::User, Role::Ci];

/// Roles that may read the farm (rigs, jobs and their logs, the queue, sweeps, the dashboard).
pub const READERS: &[Role] = &[Role::User, Role::Ci, Role::Viewer];

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            TokenEntry {
                name: "alice".into(),
                token: "alice-token-0123456789".into(),
                role: Role::User,
            },
            TokenEntry {
                name: "bench-07".into(),
                token: "agent-token-0123456789".into(),
                role: Role::Agent,
            },
        ])
    }

    #[test]
    fn tokens_map_to_callers_and_roles_are_enforced() {
        let a = auth();
        let c = a
            .identify(Some("Bearer alice-token-0123456789"), None)
            .unwrap();
        assert_eq!(
            c,
            Caller {
                name: "alice".into(),
                role: Role::User
            }
        );
        assert!(require(&c, CLIENTS, "reserving").is_ok());
        let e = require(&c, &[Role::Agent], "the agent link").unwrap_err();
        assert!(e.to_string().contains("needs role agent"), "{e}");
        for (t, want) in [
            (None, AuthError::Missing),
            (Some("Bearer wrong-token-00000000"), AuthError::Unknown),
            (Some("Basic x"), AuthError::Malformed),
        ] {
            assert_eq!(a.identify(t, Some("mallory")).unwrap_err(), want);
        }
    }

    #[test]
    fn without_tokens_everyone_is_a_named_admin() {
        let c = Auth::new(vec![]).identify(None, Some("bob")).unwrap();
        assert_eq!(
            c,
            Caller {
                name: "bob".into(),
                role: Role::Admin
            }
        );
    }
}
