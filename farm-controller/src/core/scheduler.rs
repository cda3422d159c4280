//! Who gets which rig: pure functions of the rigs, the waiting requests and the time. Nothing here mutates
//! anything; [`super::leases`] applies the grants.
//!
//! Waiting requests are served highest class first (interactive > ci > nightly), oldest first within a class;
//! a CI request that has waited longer than the aging period is served like an interactive one, and nightly
//! requests never age past the others, so they only take rigs nobody else is waiting for. A rig whose last job
//! ended in an infrastructure error goes only to its own health check until that passes.

use std::collections::HashSet;
use std::time::Duration;

use nvfarm_model::farm::{Lease, LeaseKind, Priority, Request, Rig, RigState};
use nvfarm_model::time::rfc3339;

/// The farm's records by id (a persistent map: cheap to snapshot).
pub type Records<T> = imbl::OrdMap<String, T>;

/// A request's rank in service order (higher first).
fn rank(p: Priority) -> u32 {
    match p {
        Priority::Nightly => 0,
        Priority::Ci => 1,
        Priority::Interactive => 2,
        Priority::System => 10,
    }
}

/// The rank a request is served at now: its class's, or interactive's for a CI request waiting past `aging`.
pub fn effective_rank(r: &Request, now: u64, aging: Duration) -> u32 {
    if r.priority == Priority::Ci
        && now.saturating_sub(r.created_ms) >= nvme_spec::units::millis(aging)
    {
        rank(Priority::Interactive)
    } else {
        rank(r.priority)
    }
}

/// Waiting requests in service order.
pub fn service_order<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    now: u64,
    aging: Duration,
) -> Vec<&'a Request> {
    let mut v: Vec<&Request> = requests.into_iter().collect();
    v.sort_by(|a, b| {
        effective_rank(b, now, aging)
            .cmp(&effective_rank(a, now, aging))
            .then(a.created_ms.cmp(&b.created_ms))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// Whether `req` could take `rig` now.
pub fn usable(rig: &Rig, req: &Request) -> bool {
    rig.state == RigState::Idle
        && req.selector.matches(rig)
        && (!rig.health_check_pending || is_health_check_for(req, rig))
}

/// A rig waiting for its health check goes only to that check (the controller's own `system` request for it).
fn is_health_check_for(req: &Request, rig: &Rig) -> bool {
    req.priority == Priority::System && req.selector.rig.as_deref() == Some(rig.name.as_str())
}

/// A request that gets a rig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The request served.
    pub request: String,
    /// The rig it gets.
    pub rig: String,
}

/// Every request that can be served now, in service order, each with its rig (a rig is granted once).
pub fn schedule(
    rigs: &Records<Rig>,
    requests: &Records<Request>,
    now: u64,
    aging: Duration,
) -> Vec<Grant> {
    let mut taken = HashSet::new();
    let mut grants = vec![];
    for req in service_order(requests.values(), now, aging) {
        if let Some(rig) = rigs
            .values()
            .find(|r| !taken.contains(&r.name) && usable(r, req))
        {
            taken.insert(rig.name.clone());
            grants.push(Grant {
                request: req.id.clone(),
                rig: rig.name.clone(),
            });
        }
    }
    grants
}

/// 1-based place of request `id` in service order (0 if it is not waiting).
pub fn position(requests: &Records<Request>, id: &str, now: u64, aging: Duration) -> u32 {
    service_order(requests.values(), now, aging)
        .iter()
        .position(|r| r.id == id)
        .map(|p| p as u32 + 1)
        .unwrap_or(0)
}

/// Why `req` is still waiting, in words.
pub fn waiting_because(
    rigs: &Records<Rig>,
    leases: &Records<Lease>,
    requests: &Records<Request>,
    req: &Request,
    now: u64,
    aging: Duration,
) -> String {
    let matching: Vec<&Rig> = rigs.values().filter(|r| req.selector.matches(r)).collect();
    if matching.is_empty() {
        return format!("no rig matches {}", req.selector.describe());
    }
    if matching.iter().any(|r| usable(r, req)) {
        let ahead = service_order(requests.values(), now, aging)
            .iter()
            .take_while(|o| o.id != req.id)
            .count();
        return format!("a matching rig is free; {ahead} request(s) ahead are being served first");
    }
    let reasons: Vec<String> = matching
        .iter()
        .map(|r| match r.state {
            RigState::Leased => match r.lease_id.as_ref().and_then(|l| leases.get(l)) {
                Some(l) if l.kind == LeaseKind::Reservation => format!(
                    "{} reserved by {} until {}",
                    r.name,
                    l.holder,
                    rfc3339(l.expires_ms)
                ),
                Some(l) if l.stopping.is_some() => format!(
                    "{} finishing {} job {} (waiting for its agent to confirm the stop)",
                    r.name,
                    l.stopping.as_deref().unwrap_or("stopped"),
                    l.job_id.as_deref().unwrap_or("?"),
                ),
                Some(l) => format!(
                    "{} running job {} for {}",
                    r.name,
                    l.job_id.as_deref().unwrap_or("?"),
                    l.holder
                ),
                None => format!("{} leased", r.name),
            },
            RigState::Offline => format!("{} offline ({})", r.name, r.reason),
            RigState::Quarantined => format!("{} quarantined ({})", r.name, r.reason),
            RigState::Maintenance => format!("{} in maintenance ({})", r.name, r.reason),
            RigState::Idle if r.health_check_pending => {
                format!("{} waiting for its health check", r.name)
            }
            RigState::Idle => format!("{} idle", r.name),
        })
        .collect();
    format!("all matching rigs are busy: {}", reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvfarm_model::farm::Selector;

    const AGING: Duration = Duration::from_secs(300);

    fn rig(name: &str, model: &str) -> Rig {
        let mut r = Rig::new(name, "a", 0);
        r.state = RigState::Idle;
        r.labels.insert("model".into(), model.into());
        r
    }

    fn rigs(list: &[Rig]) -> Records<Rig> {
        list.iter().map(|r| (r.name.clone(), r.clone())).collect()
    }

    fn req(id: &str, priority: Priority, created_ms: u64, selector: Selector) -> Request {
        Request {
            id: id.into(),
            selector,
            priority,
            holder: "u".into(),
            created_ms,
            duration_ms: 1000,
            job_id: None,
            detached: false,
            expires_ms: 0,
        }
    }

    fn reqs(list: &[Request]) -> Records<Request> {
        list.iter().map(|r| (r.id.clone(), r.clone())).collect()
    }

    fn model(m: &str) -> Selector {
        Selector::labels([("model".to_string(), m.to_string())].into())
    }

    #[test]
    fn classes_first_then_oldest_first() {
        let q = reqs(&[
            req("n", Priority::Nightly, 1, model("X")),
            req("c2", Priority::Ci, 3, model("X")),
            req("c1", Priority::Ci, 2, model("X")),
            req("i", Priority::Interactive, 4, model("X")),
        ]);
        let order: Vec<&str> = service_order(q.values(), 10, AGING)
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(order, ["i", "c1", "c2", "n"]);
        assert_eq!(position(&q, "c2", 10, AGING), 3);
        assert_eq!(position(&q, "gone", 10, AGING), 0);
    }

    #[test]
    fn ci_ages_into_interactive_but_nightly_never_does() {
        let q = reqs(&[
            req("n", Priority::Nightly, 0, model("X")),
            req("c", Priority::Ci, 1, model("X")),
            req("i", Priority::Interactive, 400_000, model("X")),
        ]);
        let now = 1_000_000;
        let order: Vec<&str> = service_order(q.values(), now, AGING)
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(
            order,
            ["c", "i", "n"],
            "the aged CI request is served like an interactive one, and it is older"
        );
    }

    #[test]
    fn each_rig_is_granted_once_and_only_to_matching_requests() {
        let r = rigs(&[rig("x1", "X"), rig("y1", "Y")]);
        let q = reqs(&[
            req("a", Priority::Ci, 1, model("X")),
            req("b", Priority::Ci, 2, model("X")),
            req("c", Priority::Ci, 3, model("Y")),
            req("d", Priority::Ci, 4, model("Z")),
        ]);
        assert_eq!(
            schedule(&r, &q, 10, AGING),
            vec![
                Grant {
                    request: "a".into(),
                    rig: "x1".into()
                },
                Grant {
                    request: "c".into(),
                    rig: "y1".into()
                },
            ]
        );
    }

    #[test]
    fn a_rig_pending_its_health_check_goes_only_to_that_check() {
        let mut sick = rig("x1", "X");
        sick.health_check_pending = true;
        let r = rigs(&[sick]);
        let q = reqs(&[
            req("user", Priority::Interactive, 1, model("X")),
            req("check", Priority::System, 2, Selector::rig("x1")),
        ]);
        assert_eq!(
            schedule(&r, &q, 10, AGING),
            vec![Grant {
                request: "check".into(),
                rig: "x1".into()
            }]
        );
        let only_user = reqs(&[req("user", Priority::Interactive, 1, model("X"))]);
        assert!(schedule(&r, &only_user, 10, AGING).is_empty());
        let why = waiting_because(
            &r,
            &Records::new(),
            &only_user,
            &only_user["user"],
            10,
            AGING,
        );
        assert!(why.contains("x1 waiting for its health check"), "{why}");
    }

    #[test]
    fn waiting_reasons_name_each_matching_rig() {
        let mut leased = rig("x1", "X");
        leased.state = RigState::Leased;
        leased.lease_id = Some("lease-1".into());
        let mut off = rig("x2", "X");
        off.state = RigState::Offline;
        off.reason = "agent a silent".into();
        let r = rigs(&[leased, off]);
        let leases: Records<Lease> = [(
            "lease-1".to_string(),
            Lease {
                id: "lease-1".into(),
                rig: "x1".into(),
                holder: "alice".into(),
                fencing_token: 1,
                kind: LeaseKind::Reservation,
                job_id: None,
                granted_ms: 0,
                expires_ms: 3_600_000,
                stopping: None,
                request_id: None,
                claimed: true,
            },
        )]
        .into_iter()
        .collect();
        let q = reqs(&[req("b", Priority::Ci, 1, model("X"))]);
        let why = waiting_because(&r, &leases, &q, &q["b"], 10, AGING);
        assert!(
            why.contains("x1 reserved by alice until 1970-01-01T01:00:00Z"),
            "{why}"
        );
        assert!(why.contains("x2 offline (agent a silent)"), "{why}");
        let nothing = reqs(&[req("z", Priority::Ci, 1, model("Z"))]);
        assert_eq!(
            waiting_because(&r, &leases, &nothing, &nothing["z"], 10, AGING),
            "no rig matches model=Z"
        );
    }

    #[test]
    fn a_rig_whose_stopped_job_has_not_confirmed_says_so() {
        let mut leased = rig("x1", "X");
        leased.state = RigState::Leased;
        leased.lease_id = Some("lease-1".into());
        let r = rigs(&[leased]);
        let leases: Records<Lease> = [(
            "lease-1".to_string(),
            Lease {
                id: "lease-1".into(),
                rig: "x1".into(),
                holder: "alice".into(),
                fencing_token: 1,
                kind: LeaseKind::Job,
                job_id: Some("job-000007".into()),
                granted_ms: 0,
                expires_ms: 60_000,
                stopping: Some("cancelled".into()),
                request_id: None,
                claimed: true,
            },
        )]
        .into_iter()
        .collect();
        let q = reqs(&[req("b", Priority::Ci, 1, model("X"))]);
        let why = waiting_because(&r, &leases, &q, &q["b"], 10, AGING);
        assert!(
            why.contains("x1 finishing cancelled job job-000007"),
            "{why}"
        );
    }
}
