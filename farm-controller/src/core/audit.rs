//! The state's own invariants, checked on demand: what must hold between rigs, leases, requests and jobs after
//! every transition, whatever the inputs were. The fuzz harness and the property tests call it after each step;
//! a violation names the records involved.

use std::collections::HashMap;

use nvfarm_model::farm::{JobState, LeaseKind, RigState};

use super::state::State;
use super::Farm;

impl State {
    /// Every broken invariant, one line each (empty: the state is consistent).
    pub fn violations(&self) -> Vec<String> {
        let mut v = vec![];
        let mut per_rig: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut tokens: HashMap<u64, &str> = HashMap::new();
        for l in self.leases.values() {
            per_rig.entry(&l.rig).or_default().push(&l.id);
            if !self.rigs.contains_key(&l.rig) {
                v.push(format!(
                    "lease {} is on rig {}, which does not exist",
                    l.id, l.rig
                ));
            }
            if l.fencing_token == 0 || l.fencing_token > self.fencing {
                v.push(format!(
                    "lease {} has fencing token {} but the newest handed out is {}",
                    l.id, l.fencing_token, self.fencing
                ));
            }
            if let Some(other) = tokens.insert(l.fencing_token, &l.id) {
                v.push(format!(
                    "leases {other} and {} share fencing token {}",
                    l.id, l.fencing_token
                ));
            }
            match (l.kind, l.job_id.as_deref()) {
                (LeaseKind::Job, None) => v.push(format!("job lease {} names no job", l.id)),
                (LeaseKind::Job, Some(j)) if !self.jobs.contains_key(j) => v.push(format!(
                    "lease {} is for job {j}, which does not exist",
                    l.id
                )),
                (LeaseKind::Reservation, Some(j)) => {
                    v.push(format!("reservation {} names job {j}", l.id))
                }
                _ => {}
            }
        }
        for (rig, ids) in &per_rig {
            if ids.len() > 1 {
                v.push(format!(
                    "rig {rig} is held by {} leases: {}",
                    ids.len(),
                    ids.join(", ")
                ));
            }
        }
        for r in self.rigs.values() {
            let held = per_rig.get(r.name.as_str()).and_then(|ids| ids.first());
            match (&r.lease_id, held) {
                (Some(id), Some(h)) if id != h => v.push(format!(
                    "rig {} points at lease {id} but is held by {h}",
                    r.name
                )),
                (Some(id), None) => v.push(format!(
                    "rig {} points at lease {id}, which does not exist",
                    r.name
                )),
                (None, Some(h)) => {
                    v.push(format!("rig {} is held by {h} but does not say so", r.name))
                }
                _ => {}
            }
            if r.state == RigState::Idle && held.is_some() {
                v.push(format!("rig {} is idle while held", r.name));
            }
            if r.state == RigState::Leased && held.is_none() {
                v.push(format!("rig {} is leased by nothing", r.name));
            }
        }
        let mut running: HashMap<&str, &str> = HashMap::new();
        for j in self.jobs.values() {
            let lease = self
                .leases
                .values()
                .find(|l| l.job_id.as_deref() == Some(j.id.as_str()));
            if !crate::store::resident(j.state, j.settled, lease.is_some()) {
                v.push(format!(
                    "job {} is {} and settled with no lease, yet still in memory: finished jobs leave it",
                    j.id, j.state
                ));
            }
            match j.state {
                JobState::Queued => {
                    if !self
                        .requests
                        .values()
                        .any(|r| r.job_id.as_deref() == Some(j.id.as_str()))
                    {
                        v.push(format!(
                            "job {} is queued without a request: it would never run",
                            j.id
                        ));
                    }
                }
                JobState::Assigned | JobState::Flashing | JobState::Testing => match lease {
                    None => v.push(format!("job {} is {:?} without a lease", j.id, j.state)),
                    Some(l) => {
                        if j.rig.as_deref() != Some(l.rig.as_str()) {
                            v.push(format!(
                                "job {} runs on {:?} but its lease {} is on {}",
                                j.id, j.rig, l.id, l.rig
                            ));
                        }
                        if j.fencing_token != l.fencing_token {
                            v.push(format!(
                                "job {} has token {} but its lease {} has {}",
                                j.id, j.fencing_token, l.id, l.fencing_token
                            ));
                        }
                        if let Some(other) = running.insert(l.rig.as_str(), j.id.as_str()) {
                            v.push(format!(
                                "jobs {other} and {} both run on rig {}",
                                j.id, l.rig
                            ));
                        }
                    }
                },
                _ => {
                    if !j.settled && lease.is_none() {
                        v.push(format!(
                            "job {} ended {:?} unsettled with nothing holding its rig",
                            j.id, j.state
                        ));
                    }
                }
            }
        }
        v.extend(self.requests.index_violations());
        for rig in self.rigs.values() {
            for sel in self.requests.selectors_for(rig) {
                if let Some(r) = self
                    .requests
                    .group(sel)
                    .find(|r| super::scheduler::usable(rig, r))
                {
                    v.push(format!(
                        "request {} waits although rig {} is free for it: nothing would grant it",
                        r.id, rig.name
                    ));
                }
            }
        }
        for r in self.requests.values() {
            if let Some(j) = r.job_id.as_deref() {
                match self.jobs.get(j) {
                    None => v.push(format!(
                        "request {} is for job {j}, which does not exist",
                        r.id
                    )),
                    Some(job) if job.state != JobState::Queued => v.push(format!(
                        "request {} still waits for job {j}, which is {:?}",
                        r.id, job.state
                    )),
                    _ => {}
                }
            }
        }
        v
    }
}

impl Farm {
    /// Checks the state's invariants (see [`State::violations`]); `Err` lists every broken one. For the fuzz
    /// harness and tests: a consistent farm returns `Ok` after any sequence of calls.
    pub async fn audit(&self) -> Result<(), String> {
        let st = self.state.lock().await;
        let mut v = st.violations();
        // Every stored job is either in memory or counted among the finished ones left in the store.
        match self.store.jobs_where(|_| true, 0) {
            Ok(stored) => {
                let counted = st.jobs.len() as u64 + st.finished.values().sum::<u64>();
                if stored.len() as u64 != counted {
                    v.push(format!(
                        "the store holds {} jobs but memory knows of {counted} ({} resident, {:?} finished)",
                        stored.len(),
                        st.jobs.len(),
                        st.finished
                    ));
                }
                for j in stored.iter().filter(|j| !st.jobs.contains_key(&j.id)) {
                    if !j.state.is_terminal() || !j.settled {
                        v.push(format!(
                            "job {} is {} in the store but not in memory: only finished, settled jobs leave it",
                            j.id, j.state
                        ));
                    }
                }
            }
            Err(e) => v.push(format!("the store cannot list jobs: {e}")),
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(v.join("\n"))
        }
    }
}
