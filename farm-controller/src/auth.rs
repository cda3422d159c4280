//! Bearer-token authentication and role checks.
//!
//! An interceptor reads `authorization: Bearer <token>`, finds the token in the config and attaches the
//! [`Caller`] to the request. Without tokens configured (loopback only, see [`crate::config::Config`]) every
//! caller is an admin named by its `x-nvfarm-user` header (or "local").

use tonic::{Request, Status};

use crate::config::{Role, TokenEntry};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Clone, Debug)]
pub struct Auth {
    tokens: Vec<TokenEntry>,
}

impl Auth {
    pub fn new(tokens: Vec<TokenEntry>) -> Self {
        Auth { tokens }
    }

    /// The tonic interceptor.
    pub fn intercept(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.identify(req.metadata())?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }

    fn identify(&self, md: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        let header = md.get("authorization").and_then(|v| v.to_str().ok());
        if self.tokens.is_empty() {
            let name = md
                .get("x-nvfarm-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("local")
                .to_string();
            return Ok(Caller {
                name,
                role: Role::Admin,
            });
        }
        let Some(header) = header else {
            return Err(Status::unauthenticated(
                "no token: pass --token or set FARM_TOKEN (authorization: Bearer <token>)",
            ));
        };
        let Some(token) = header.strip_prefix("Bearer ") else {
            return Err(Status::unauthenticated(
                "malformed authorization header: expected 'Bearer <token>'",
            ));
        };
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
        match found {
            Some(t) => Ok(Caller {
                name: t.name.clone(),
                role: t.role,
            }),
            None => Err(Status::unauthenticated(
                "unknown token: check --token / FARM_TOKEN against the controller's config",
            )),
        }
    }
}

/// The caller attached by the interceptor.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("request without caller (interceptor missing)"))
}

/// Refuses callers whose role is not in `allowed`.
pub fn require(c: &Caller, allowed: &[Role], what: &str) -> Result<(), Status> {
    if c.role == Role::Admin || allowed.contains(&c.role) {
        Ok(())
    } else {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(Status::permission_denied(format!(
            "{what} needs role {} (or admin); '{}' has role {}",
            names.join(" or "),
            c.name,
            c.role.as_str()
        )))
    }
}

/// Roles that act as farm clients.
pub const CLIENTS: &[Role] = &[Role::User, Role::Ci];

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

    fn req(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", t.parse().unwrap());
        }
        r
    }

    #[test]
    fn tokens_map_to_callers_and_roles_are_enforced() {
        let a = auth();
        let r = a
            .intercept(req(Some("Bearer alice-token-0123456789")))
            .unwrap();
        let c = caller(&r).unwrap();
        assert_eq!(
            c,
            Caller {
                name: "alice".into(),
                role: Role::User
            }
        );
        assert!(require(&c, CLIENTS, "reserving").is_ok());
        let e = require(&c, &[Role::Agent], "the agent link").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("needs role agent"), "{}", e.message());
        for (t, msg) in [
            (None, "no token"),
            (Some("Bearer wrong-token-00000000"), "unknown token"),
            (Some("Basic x"), "malformed"),
        ] {
            let e = a.intercept(req(t)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert!(e.message().contains(msg), "{}", e.message());
        }
    }

    #[test]
    fn without_tokens_everyone_is_a_named_admin() {
        let a = Auth::new(vec![]);
        let mut r = req(None);
        r.metadata_mut()
            .insert("x-nvfarm-user", "bob".parse().unwrap());
        let c = caller(&a.intercept(r).unwrap()).unwrap();
        assert_eq!(
            c,
            Caller {
                name: "bob".into(),
                role: Role::Admin
            }
        );
    }
}
