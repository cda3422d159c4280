//! The scheduler under random operation sequences (proptest): requests of every class arrive for rigs by name
//! or by label, rigs are freed and taken out of service, time passes; after every pass of the scheduler:
//! - no rig is granted twice, and only a rig the request can use (idle, matching, not held for a health check);
//! - no request still waiting ranks above one that was granted a rig it could also have used (classes first,
//!   oldest first within a class, a CI request past the aging period counts as interactive);
//! - service order is sorted by that rule, and nightly never ages;
//! - a pass that looks only at what the step touched grants exactly what a pass over every free rig grants.

use std::collections::HashSet;
use std::time::Duration;

use farm_controller::core::queue::Queue;
use farm_controller::core::scheduler::{
    effective_rank, schedule, service_order, usable, Records, Scope,
};
use nvfarm_model::farm::{Priority, Request, Rig, RigState, Selector};
use proptest::prelude::*;

const AGING: Duration = Duration::from_secs(300);
const RIGS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    /// A request of this class for rig i (`Some`) or for model X/Y (`None`, by i's parity).
    Ask(Priority, Option<usize>, usize),
    /// Rig i's lease ends.
    Free(usize),
    /// Rig i goes out of service or comes back.
    Toggle(usize),
    /// Rig i is held for its health check, or the check passed.
    HealthCheck(usize),
    /// Time passes (seconds).
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let class = prop_oneof![
        Just(Priority::Nightly),
        Just(Priority::Ci),
        Just(Priority::Interactive),
        Just(Priority::System),
    ];
    prop_oneof![
        4 => (class, proptest::option::of(0..RIGS), 0..RIGS).prop_map(|(c, r, i)| Op::Ask(c, r, i)),
        3 => (0..RIGS).prop_map(Op::Free),
        1 => (0..RIGS).prop_map(Op::Toggle),
        1 => (0..RIGS).prop_map(Op::HealthCheck),
        2 => (0u64..400).prop_map(Op::Wait),
    ]
}

fn rig_name(i: usize) -> String {
    format!("r{i}")
}

fn initial_rigs() -> Records<Rig> {
    (0..RIGS)
        .map(|i| {
            let mut r = Rig::new(&rig_name(i), "a", 0);
            r.state = RigState::Idle;
            r.labels = [(
                "model".to_string(),
                if i % 2 == 0 { "X" } else { "Y" }.to_string(),
            )]
            .into();
            (r.name.clone(), r)
        })
        .collect()
}

/// The key service order must be sorted by.
fn key(r: &Request, now: u64) -> (std::cmp::Reverse<u32>, u64, String) {
    (
        std::cmp::Reverse(effective_rank(r, now, AGING)),
        r.created_ms,
        r.id.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_never_double_grant_and_keep_the_order(ops in proptest::collection::vec(op(), 1..60)) {
        let mut rigs = initial_rigs();
        let mut requests = Queue::default();
        let mut now: u64 = 1_000_000;
        let mut seq = 0u64;
        for op in ops {
            // What this step touches: a pass scoped to it must find what a pass over everything finds.
            let mut touched_rigs: Vec<String> = vec![];
            let mut queued: Vec<String> = vec![];
            match op {
                Op::Ask(priority, rig, i) => {
                    seq += 1;
                    let selector = match rig {
                        Some(r) => Selector::rig(&rig_name(r)),
                        None => Selector::labels(
                            [("model".to_string(), if i % 2 == 0 { "X" } else { "Y" }.to_string())].into(),
                        ),
                    };
                    let id = format!("req-{seq:06}");
                    queued.push(id.clone());
                    requests.insert(Request {
                        id,
                        selector,
                        priority,
                        holder: "u".into(),
                        created_ms: now,
                        duration_ms: 1000,
                        job_id: None,
                        detached: false,
                        expires_ms: 0,
                    });
                }
                Op::Free(i) => {
                    touched_rigs.push(rig_name(i));
                    if let Some(r) = rigs.get_mut(&rig_name(i)) {
                        if r.state == RigState::Leased {
                            r.state = RigState::Idle;
                        }
                    }
                }
                Op::Toggle(i) => {
                    touched_rigs.push(rig_name(i));
                    if let Some(r) = rigs.get_mut(&rig_name(i)) {
                        r.state = match r.state {
                            RigState::Idle => RigState::Maintenance,
                            RigState::Maintenance => RigState::Idle,
                            s => s,
                        };
                    }
                }
                Op::HealthCheck(i) => {
                    touched_rigs.push(rig_name(i));
                    if let Some(r) = rigs.get_mut(&rig_name(i)) {
                        r.health_check_pending = !r.health_check_pending;
                    }
                }
                Op::Wait(s) => now += s * 1000,
            }
            // Service order is sorted by (effective class, age, id).
            let order = service_order(requests.values(), now, AGING);
            for w in order.windows(2) {
                prop_assert!(key(w[0], now) <= key(w[1], now), "{:?} before {:?}", w[0], w[1]);
            }
            for r in &order {
                if r.priority == Priority::Nightly {
                    prop_assert_eq!(effective_rank(r, now, AGING), effective_rank(r, 0, AGING));
                }
            }
            // One pass.
            let grants = schedule(&rigs, &requests, Scope::All, now, AGING);
            let scoped = Scope::Changed { rigs: &touched_rigs, requests: &queued };
            prop_assert_eq!(
                &schedule(&rigs, &requests, scoped, now, AGING),
                &grants,
                "a pass over what changed grants what a pass over everything does"
            );
            let mut taken = HashSet::new();
            for g in &grants {
                prop_assert!(taken.insert(g.rig.clone()), "rig {} granted twice", g.rig);
                let req = &requests[&g.request];
                prop_assert!(usable(&rigs[&g.rig], req), "{} cannot use {}", g.request, g.rig);
            }
            // Nobody left waiting outranks a granted request for a rig it could have used.
            let granted: HashSet<&str> = grants.iter().map(|g| g.request.as_str()).collect();
            for g in &grants {
                let winner = &requests[&g.request];
                for waiting in requests.values().filter(|r| !granted.contains(r.id.as_str())) {
                    if usable(&rigs[&g.rig], waiting) {
                        prop_assert!(
                            key(winner, now) < key(waiting, now),
                            "{} waits though it ranks above {} which got {}",
                            waiting.id, winner.id, g.rig
                        );
                    }
                }
            }
            // Apply the grants.
            for g in grants {
                requests.remove(&g.request);
                if let Some(r) = rigs.get_mut(&g.rig) {
                    r.state = RigState::Leased;
                    r.health_check_pending = false;
                }
            }
        }
    }
}
