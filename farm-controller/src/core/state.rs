//! The farm's in-memory state: the records the store holds, plus the connected agents and recent grants.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use nvfarm_model::farm::{Artifact, Job, Lease, LeaseKind, Request, Rig, RigState, Sweep};
use nvfarm_model::link::ToAgent;

use super::agents::AgentSender;
use crate::config::Config;
use crate::store::{Snapshot, Tx};

/// A connected agent.
#[derive(Debug)]
pub(crate) struct AgentSession {
    /// Which connection this is (a reconnect makes a new one).
    pub conn: u64,
    pub tx: AgentSender,
    pub last_heartbeat: Instant,
    /// Silent too long: its rigs are offline, a reconnect starts a new session.
    pub lost: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub rigs: BTreeMap<String, Rig>,
    pub leases: BTreeMap<String, Lease>,
    pub requests: BTreeMap<String, Request>,
    pub jobs: BTreeMap<String, Job>,
    pub artifacts: BTreeMap<String, Artifact>,
    pub sweeps: BTreeMap<String, Sweep>,
    /// The last fencing token handed out.
    pub fencing: u64,
    /// The last id sequence number handed out.
    pub seq: u64,
    pub agents: HashMap<String, AgentSession>,
    /// Which lease each recently granted request got (for clients waiting on a request).
    pub grants: HashMap<String, String>,
    /// Consecutive infrastructure errors that quarantine a rig.
    pub quarantine_after: u32,
    pub next_conn: u64,
    /// Bytes of log stored per job (for the log cap).
    pub log_bytes: HashMap<String, u64>,
}

impl State {
    /// The state a restart starts from, and the bookkeeping to store before serving: every idle rig is offline
    /// until its agent registers again; job leases get a fresh grace period for their agent to come back.
    pub fn restore(
        snap: Snapshot,
        logs: &HashMap<String, (u64, u64)>,
        cfg: &Config,
        now: u64,
    ) -> (State, Tx) {
        let mut st = State {
            fencing: snap.fencing,
            seq: snap.seq,
            quarantine_after: cfg.quarantine_after,
            ..Default::default()
        };
        let mut tx = Tx::new();
        for mut r in snap.rigs {
            if r.state == RigState::Idle {
                r.state = RigState::Offline;
                r.reason = "waiting for its agent to reconnect after a controller restart".into();
                tx.rig(&r);
            }
            st.rigs.insert(r.name.clone(), r);
        }
        for mut l in snap.leases {
            // Reservations keep their own clock.
            if l.kind == LeaseKind::Job {
                l.expires_ms = now + cfg.agent_timeout.as_millis() as u64;
            }
            st.leases.insert(l.id.clone(), l);
        }
        for r in snap.requests {
            st.requests.insert(r.id.clone(), r);
        }
        for mut j in snap.jobs {
            let (lines, bytes) = logs.get(&j.id).copied().unwrap_or((0, 0));
            j.log_lines = lines;
            st.log_bytes.insert(j.id.clone(), bytes);
            st.jobs.insert(j.id.clone(), j);
        }
        for a in snap.artifacts {
            st.artifacts.insert(a.sha256.clone(), a);
        }
        for s in snap.sweeps {
            st.sweeps.insert(s.id.clone(), s);
        }
        (st, tx)
    }

    /// A new id like `job-000042` (the counter is stored with the change that uses it).
    pub fn next_id(&mut self, kind: &str, tx: &mut Tx) -> String {
        self.seq += 1;
        tx.meta("seq", self.seq);
        format!("{kind}-{:06}", self.seq)
    }

    /// The next fencing token (stored with the grant that uses it).
    pub fn next_token(&mut self, tx: &mut Tx) -> u64 {
        self.fencing += 1;
        tx.meta("fencing", self.fencing);
        self.fencing
    }

    /// The agent owning `rig`.
    pub fn agent_of(&self, rig: &str) -> Option<String> {
        self.rigs.get(rig).map(|r| r.agent.clone())
    }

    /// Any message from `agent` shows it is alive (heartbeats can queue behind job traffic).
    pub fn alive(&mut self, agent: &str) {
        if let Some(s) = self.agents.get_mut(agent).filter(|s| !s.lost) {
            s.last_heartbeat = Instant::now();
        }
    }

    /// Whether `agent` has a live session.
    pub fn connected(&self, agent: &str) -> bool {
        self.agents.get(agent).is_some_and(|a| !a.lost)
    }

    /// Sends committed messages to their agents (a lost or absent agent is told when it registers).
    pub fn deliver(&self, out: Vec<(String, ToAgent)>) {
        for (agent, msg) in out {
            match self.agents.get(&agent) {
                Some(s) if !s.lost => {
                    let _ = s.tx.send(msg);
                }
                _ => tracing::warn!(
                    agent,
                    "agent not connected; it will be told when it registers"
                ),
            }
        }
    }
}
