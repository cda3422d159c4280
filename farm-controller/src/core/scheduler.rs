//! Who gets which rig: pure functions of the rigs, the waiting requests and the time. Nothing here mutates
//! anything; [`super::leases`] applies the grants.
//!
//! Waiting requests are served highest class first (interactive > ci > nightly), oldest first within a class;
//! a CI request that has waited longer than the aging period is served like an interactive one, and nightly
//! requests never age past the others, so they only take rigs nobody else is waiting for. A rig whose last job
//! ended in an infrastructure error goes only to its own health check until that passes.
//!
//! Cost follows what changed, not the queue: a pass looks at the free rigs a change touched and, through the
//! [`Queue`]'s index, only at the requests that could take them. A request's position counts only the requests
//! competing with it (those that could take a rig it could take), not everyone waiting for other rigs.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use nvfarm_model::farm::{Lease, LeaseKind, Priority, Request, Rig, RigState, Selector};
use nvfarm_model::time::rfc3339;

use super::queue::Queue;

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

/// Where a request stands in service order: smaller first.
fn order_key(r: &Request, now: u64, aging: Duration) -> (std::cmp::Reverse<u32>, u64, &str) {
    (
        std::cmp::Reverse(effective_rank(r, now, aging)),
        r.created_ms,
        r.id.as_str(),
    )
}

/// Waiting requests in service order.
pub fn service_order<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    now: u64,
    aging: Duration,
) -> Vec<&'a Request> {
    let mut v: Vec<&Request> = requests.into_iter().collect();
    v.sort_by_cached_key(|r| order_key(r, now, aging));
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

/// The rigs `sel` matches, whatever their state (a named rig is looked up, not searched for).
pub fn matching_rigs<'a>(rigs: &'a Records<Rig>, sel: &Selector) -> Vec<&'a Rig> {
    match &sel.rig {
        Some(name) => rigs
            .get(name)
            .filter(|r| sel.matches(r))
            .into_iter()
            .collect(),
        None => rigs.values().filter(|r| sel.matches(r)).collect(),
    }
}

/// A request that gets a rig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The request served.
    pub request: String,
    /// The rig it gets.
    pub rig: String,
}

/// What a scheduling pass looks at.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every free rig (after a restart, and in the periodic tick as a backstop).
    All,
    /// Only what a change touched: these rigs (any that are free now) and the free rigs these new requests
    /// match. Enough after any change, because after every pass no waiting request can use a free rig: only a
    /// rig that changed or a request that is new can make a grant possible.
    Changed {
        /// Rigs the change touched.
        rigs: &'a [String],
        /// Requests the change queued.
        requests: &'a [String],
    },
}

/// Every request that can be served now, in service order, each with its rig (a rig is granted once; a
/// request gets the first usable rig by name). Looks only at free rigs in `scope` and at the requests that
/// could take them: within a group of requests with the same selector only the first `n` in service order can
/// be served when `n` rigs are free for it, so the rest of the group is never sorted or visited.
pub fn schedule(
    rigs: &Records<Rig>,
    queue: &Queue,
    scope: Scope<'_>,
    now: u64,
    aging: Duration,
) -> Vec<Grant> {
    if queue.is_empty() {
        return vec![];
    }
    let mut free: BTreeMap<&str, &Rig> = BTreeMap::new();
    match scope {
        Scope::All => free.extend(
            rigs.values()
                .filter(|r| r.state == RigState::Idle)
                .map(|r| (r.name.as_str(), r)),
        ),
        Scope::Changed {
            rigs: names,
            requests,
        } => {
            for n in names {
                if let Some(r) = rigs.get(n).filter(|r| r.state == RigState::Idle) {
                    free.insert(r.name.as_str(), r);
                }
            }
            for id in requests {
                if let Some(req) = queue.get(id) {
                    for r in matching_rigs(rigs, &req.selector) {
                        if r.state == RigState::Idle {
                            free.insert(r.name.as_str(), r);
                        }
                    }
                }
            }
        }
    }
    // Free rigs per selector, in name order.
    let mut free_for: BTreeMap<&Selector, Vec<&Rig>> = BTreeMap::new();
    for r in free.values() {
        for sel in queue.selectors_for(r) {
            free_for.entry(sel).or_default().push(r);
        }
    }
    let mut candidates: Vec<&Request> = vec![];
    for (sel, free) in &free_for {
        let mut group: Vec<&Request> = queue.group(sel).collect();
        if group.len() > free.len() {
            group.select_nth_unstable_by_key(free.len() - 1, |r| order_key(r, now, aging));
            group.truncate(free.len());
        }
        candidates.extend(group);
    }
    let mut taken = HashSet::new();
    let mut grants = vec![];
    for req in service_order(candidates, now, aging) {
        let Some(free) = free_for.get(&req.selector) else {
            continue;
        };
        if let Some(rig) = free
            .iter()
            .find(|r| !taken.contains(r.name.as_str()) && usable(r, req))
        {
            taken.insert(rig.name.as_str());
            grants.push(Grant {
                request: req.id.clone(),
                rig: rig.name.clone(),
            });
        }
    }
    grants
}

/// How many waiting requests are served before `req` and compete with it (could take a rig it could take).
pub fn ahead(
    rigs: &Records<Rig>,
    queue: &Queue,
    req: &Request,
    now: u64,
    aging: Duration,
) -> usize {
    let me = order_key(req, now, aging);
    queue
        .competing(rigs, &req.selector)
        .into_iter()
        .flat_map(|sel| queue.group(sel))
        .filter(|o| o.id != req.id && order_key(o, now, aging) < me)
        .count()
}

/// 1-based place of request `id` among the requests competing with it (0 if it is not waiting).
pub fn position(rigs: &Records<Rig>, queue: &Queue, id: &str, now: u64, aging: Duration) -> u32 {
    match queue.get(id) {
        Some(req) => u32::try_from(ahead(rigs, queue, req, now, aging))
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1),
        None => 0,
    }
}

/// The whole queue in service order, each with its place among the requests competing with it.
pub fn positions<'a>(
    rigs: &Records<Rig>,
    queue: &'a Queue,
    now: u64,
    aging: Duration,
) -> Vec<(u32, &'a Request)> {
    let mut competing: BTreeMap<&Selector, Vec<&Selector>> = BTreeMap::new();
    for sel in queue.selectors() {
        competing.insert(sel, queue.competing(rigs, sel).into_iter().collect());
    }
    let mut served: BTreeMap<&Selector, u32> = BTreeMap::new();
    let mut out = vec![];
    for r in service_order(queue.values(), now, aging) {
        let ahead: u32 = competing
            .get(&r.selector)
            .into_iter()
            .flatten()
            .map(|s| served.get(s).copied().unwrap_or(0))
            .sum();
        out.push((ahead + 1, r));
        *served.entry(&r.selector).or_default() += 1;
    }
    out
}

/// Where waiting request `req` stands: its 1-based place among the requests competing with it, and why it
/// waits (the competing requests ahead are counted once for both).
pub fn standing(
    rigs: &Records<Rig>,
    leases: &Records<Lease>,
    queue: &Queue,
    req: &Request,
    now: u64,
    aging: Duration,
) -> (u32, String) {
    let ahead = ahead(rigs, queue, req, now, aging);
    let position = u32::try_from(ahead)
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1);
    (position, waiting_because_at(rigs, leases, req, || ahead))
}

/// Why `req` is still waiting, in words.
pub fn waiting_because(
    rigs: &Records<Rig>,
    leases: &Records<Lease>,
    queue: &Queue,
    req: &Request,
    now: u64,
    aging: Duration,
) -> String {
    waiting_because_at(rigs, leases, req, || ahead(rigs, queue, req, now, aging))
}

/// Why `req` is still waiting, with `ahead` counting the competing requests served before it (asked only when
/// a matching rig is free).
pub fn waiting_because_at(
    rigs: &Records<Rig>,
    leases: &Records<Lease>,
    req: &Request,
    ahead: impl FnOnce() -> usize,
) -> String {
    let matching = matching_rigs(rigs, &req.selector);
    if matching.is_empty() {
        return format!("no rig matches {}", req.selector.describe());
    }
    if matching.iter().any(|r| usable(r, req)) {
        let ahead = ahead();
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
            RigState::Probing => format!("{} registered, its drive being probed", r.name),
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

    fn reqs(list: &[Request]) -> Queue {
        list.iter().cloned().collect()
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
        let r = rigs(&[rig("x1", "X")]);
        assert_eq!(position(&r, &q, "c2", 10, AGING), 3);
        assert_eq!(position(&r, &q, "gone", 10, AGING), 0);
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
            schedule(&r, &q, Scope::All, 10, AGING),
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
            schedule(&r, &q, Scope::All, 10, AGING),
            vec![Grant {
                request: "check".into(),
                rig: "x1".into()
            }]
        );
        let only_user = reqs(&[req("user", Priority::Interactive, 1, model("X"))]);
        assert!(schedule(&r, &only_user, Scope::All, 10, AGING).is_empty());
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

    #[test]
    fn a_position_counts_only_requests_competing_for_the_same_rigs() {
        let r = rigs(&[rig("x1", "X"), rig("x2", "X"), rig("y1", "Y")]);
        let q = reqs(&[
            req("y-1", Priority::Ci, 1, Selector::rig("y1")),
            req("y-2", Priority::Ci, 2, Selector::rig("y1")),
            req("any-x", Priority::Ci, 3, model("X")),
            req("x2-1", Priority::Ci, 4, Selector::rig("x2")),
            req("x1-1", Priority::Ci, 5, Selector::rig("x1")),
        ]);
        assert_eq!(
            position(&r, &q, "x1-1", 10, AGING),
            2,
            "only model=X (which can take x1) is ahead; y1's and x2's waiters are not"
        );
        assert_eq!(position(&r, &q, "x2-1", 10, AGING), 2);
        assert_eq!(position(&r, &q, "any-x", 10, AGING), 1);
        assert_eq!(position(&r, &q, "y-2", 10, AGING), 2);
        let listed: Vec<(u32, &str)> = positions(&r, &q, 10, AGING)
            .into_iter()
            .map(|(p, r)| (p, r.id.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                (1, "y-1"),
                (2, "y-2"),
                (1, "any-x"),
                (2, "x2-1"),
                (2, "x1-1")
            ]
        );
    }

    /// The schedule as it was first written: every request in service order scans every rig.
    fn reference(rigs: &Records<Rig>, q: &Queue, now: u64) -> Vec<Grant> {
        let mut taken = HashSet::new();
        let mut grants = vec![];
        for req in service_order(q.values(), now, AGING) {
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

    proptest::proptest! {
        /// Whatever the rigs and requests, the indexed schedule grants exactly what scanning everything grants,
        /// and a pass scoped to what changed finds the same grants once nothing else could be granted.
        #[test]
        fn the_indexed_schedule_grants_what_a_full_scan_grants(
            rig_specs in proptest::collection::vec((0u8..3, 0u8..3, proptest::bool::ANY), 1..8),
            req_specs in proptest::collection::vec((0u8..4, 0u8..8, 0u8..3, 0u64..1000), 0..25),
            now in 0u64..1_000_000,
        ) {
            let mut list = vec![];
            for (i, (state, model_ix, pending)) in rig_specs.iter().enumerate() {
                let mut r = rig(&format!("r{i}"), ["X", "Y", "Z"][*model_ix as usize]);
                r.state = [RigState::Idle, RigState::Leased, RigState::Offline][*state as usize];
                r.health_check_pending = *pending;
                list.push(r);
            }
            let r = rigs(&list);
            let mut q = vec![];
            for (i, (prio, target, kind, created)) in req_specs.iter().enumerate() {
                let priority = [Priority::Nightly, Priority::Ci, Priority::Interactive, Priority::System][*prio as usize];
                let selector = match kind {
                    0 => Selector::rig(&format!("r{}", *target as usize % list.len())),
                    1 => model(["X", "Y", "Z"][*target as usize % 3]),
                    _ => Selector::default(),
                };
                q.push(req(&format!("q{i:02}"), priority, *created, selector));
            }
            let q = reqs(&q);
            proptest::prop_assert_eq!(schedule(&r, &q, Scope::All, now, AGING), reference(&r, &q, now));
            let names: Vec<String> = r.keys().cloned().collect();
            let ids: Vec<String> = q.keys().cloned().collect();
            let changed = Scope::Changed { rigs: &names, requests: &ids };
            proptest::prop_assert_eq!(schedule(&r, &q, changed, now, AGING), reference(&r, &q, now));
        }
    }
}
