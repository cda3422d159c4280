//! The controller as a state machine under arbitrary callers: a sequence of client calls (through the gRPC
//! service, so the wire-to-domain conversion and its bounds are exercised), agent messages (sessions that come,
//! go, lie about tokens and report jobs they do not own), time passing and restarts. After every step the
//! farm's own invariants hold ([`Farm::audit`]), nothing a client sent makes the controller fail internally,
//! terminal jobs stay as they ended, fencing tokens only grow, and a restart rebuilds exactly what was
//! acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use tokio::sync::mpsc;
use tonic::{Code, Request};

use farm_controller::auth::Caller;
use farm_controller::config::{Config, Role};
use farm_controller::core::{Farm, JobFilter, WatchGuard};
use farm_controller::grpc::FarmService;
use nvfarm_model::farm::{JobState, Lease, LeaseKind};
use nvfarm_model::link::{
    AgentRig, Heartbeat, HeldJob, JobProgress, JobResult, Refusal, Registration, ToAgent,
};
use nvfarm_model::report::LogLine;
use nvfarm_model::{Outcome, StepReport};
use nvfarm_proto::v1 as pb;
use nvfarm_proto::v1::farm_server::Farm as FarmApi;

const AGENTS: [&str; 3] = ["a", "b", "c"];
const RIGS: [&str; 4] = ["r1", "r2", "r3", "r4"];
const SMART: &str = "name = \"p\"\n[[step]]\nkind = \"smart\"\n";
const FLASH: &str = "name = \"f\"\n[[step]]\nkind = \"flash\"\n";
const SCRIPT: &str = "name = \"s\"\n[[step]]\nkind = \"script\"\ncommand = \"true\"\n";
/// At most this many restarts per input (each reopens the store).
const MAX_RESTARTS: u32 = 4;
/// At most this much sleeping per input (time-driven paths need some, fuzzing speed needs little).
const SLEEP_BUDGET: Duration = Duration::from_millis(30);

/// Who calls.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Who {
    /// Whoever owns what the call names (the lease's holder, the job's submitter): the call that should work.
    Owner,
    Alice,
    Bob,
    Ci,
    Admin,
    Viewer,
    AgentToken,
}

impl Who {
    fn caller(self) -> Caller {
        let (name, role) = match self {
            Who::Owner | Who::Alice => ("alice", Role::User),
            Who::Bob => ("bob", Role::User),
            Who::Ci => ("ci", Role::Ci),
            Who::Admin => ("root", Role::Admin),
            Who::Viewer => ("viewer", Role::Viewer),
            Who::AgentToken => ("a", Role::Agent),
        };
        Caller {
            name: name.into(),
            role,
        }
    }
}

/// Which of the known ids (jobs, leases, requests) an operation names; `Bogus` names one that never existed.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Pick {
    Newest,
    Known(u8),
    Bogus,
}

/// The fencing token an agent message carries.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Token {
    Right,
    Older,
    Newer,
    Raw(u64),
}

/// What a selector asks for.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Sel {
    Rig(u8),
    Model,
    Anything,
    NoSuchRig,
}

/// A duration a client sends: the default, a sensible one, or any number at all.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dur {
    Default,
    Secs(u16),
    Raw(u64),
}

impl Dur {
    fn ms(self) -> u64 {
        match self {
            Dur::Default => 0,
            Dur::Secs(s) => u64::from(s).max(1) * 1000,
            Dur::Raw(ms) => ms,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PlanPick {
    Smart,
    Flash,
    Script,
    Broken,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect {
        agent: u8,
        rigs: u8,
        held: Vec<(Pick, u8, Token, Option<u8>)>,
    },
    Disconnect {
        agent: u8,
    },
    Heartbeat {
        agent: u8,
        running: Vec<Pick>,
    },
    Progress {
        agent: u8,
        job: Pick,
        token: Token,
        phase: u8,
        lines: u8,
    },
    Result {
        agent: u8,
        job: Pick,
        token: Token,
        outcome: u8,
        steps: u8,
    },
    Refuse {
        agent: u8,
        job: Pick,
        token: Token,
    },
    Submit {
        who: Who,
        sel: Sel,
        plan: PlanPick,
        timeout: Dur,
        priority: u8,
        wait: bool,
    },
    CancelJob {
        who: Who,
        job: Pick,
    },
    Reserve {
        who: Who,
        sel: Sel,
        priority: u8,
        duration: Dur,
        wait: bool,
        detach: bool,
        watch: bool,
    },
    Release {
        who: Who,
        lease: Pick,
    },
    Extend {
        who: Who,
        lease: Pick,
        duration: Dur,
    },
    Withdraw {
        who: Who,
        request: Pick,
    },
    Claim {
        lease: Pick,
    },
    Unwatch {
        request: Pick,
    },
    RigState {
        who: Who,
        rig: u8,
        action: u8,
        reason: String,
    },
    MoveRig {
        who: Who,
        rig: u8,
        to: u8,
    },
    Tick,
    Sleep {
        ms: u8,
    },
    Restart,
}

/// A connected agent as the harness plays it.
struct Session {
    conn: u64,
    rx: mpsc::UnboundedReceiver<ToAgent>,
}

/// What the harness remembers across steps.
#[derive(Default)]
struct Seen {
    jobs: Vec<String>,
    leases: Vec<String>,
    requests: Vec<String>,
    /// Jobs that ended, and how: an ended job never changes its state again.
    ended: HashMap<String, JobState>,
    /// Every lease id seen and its token; a new lease's token is above every token seen before it.
    tokens: HashMap<String, u64>,
    newest_token: u64,
}

impl Seen {
    fn pick(list: &[String], p: Pick, bogus: &str) -> String {
        match p {
            Pick::Newest if !list.is_empty() => list[list.len() - 1].clone(),
            Pick::Known(i) if !list.is_empty() => list[i as usize % list.len()].clone(),
            _ => bogus.to_string(),
        }
    }
    fn note(list: &mut Vec<String>, id: &str) {
        if !id.is_empty() && !list.iter().any(|x| x == id) {
            list.push(id.to_string());
        }
    }
}

fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        heartbeat_interval: Duration::from_millis(4),
        agent_timeout: Duration::from_millis(8),
        restart_grace: Duration::from_millis(10),
        stop_grace: Duration::from_millis(6),
        watch_grace: Duration::from_millis(6),
        claim_timeout: Duration::from_millis(6),
        detached_wait: Duration::from_millis(20),
        aging: Duration::from_millis(15),
        quarantine_after: 2,
        ..Config::default()
    }
}

fn selector(s: Sel) -> Option<pb::Selector> {
    Some(match s {
        Sel::Rig(i) => pb::Selector {
            rig: RIGS[i as usize % RIGS.len()].into(),
            labels: Default::default(),
        },
        Sel::Model => pb::Selector {
            rig: String::new(),
            labels: [("model".to_string(), "X".to_string())].into(),
        },
        Sel::Anything => pb::Selector::default(),
        Sel::NoSuchRig => pb::Selector {
            rig: "nowhere".into(),
            labels: Default::default(),
        },
    })
}

fn request<T>(who: Who, msg: T) -> Request<T> {
    as_caller(who.caller(), msg)
}

fn as_caller<T>(caller: Caller, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(caller);
    r
}

/// `who`, with [`Who::Owner`] resolved to `owner` (a user of that name).
fn resolve(who: Who, owner: Option<String>) -> Caller {
    match (who, owner) {
        (Who::Owner, Some(name)) => Caller {
            name,
            role: Role::User,
        },
        _ => who.caller(),
    }
}

async fn holder(farm: &Farm, lease_id: &str) -> Option<String> {
    farm.rigs(&BTreeMap::new())
        .await
        .into_iter()
        .filter_map(|r| r.lease)
        .find(|l| l.id == lease_id)
        .map(|l| l.holder)
}

/// A client call's answer: success, or an error a caller can act on, never an internal failure.
fn answered<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Option<T> {
    match r {
        Ok(r) => Some(r.into_inner()),
        Err(s) => {
            assert!(
                !matches!(s.code(), Code::Internal | Code::Unknown | Code::DataLoss),
                "{what}: the controller failed internally on client input: {s:?}"
            );
            assert!(!s.message().is_empty(), "{what}: an error says why");
            None
        }
    }
}

/// The farm's acknowledged records, for comparing across a restart.
async fn records(farm: &Farm) -> (String, BTreeMap<String, Lease>, Vec<String>) {
    let jobs = farm.jobs(&JobFilter::default()).await.expect("jobs list");
    let leases = farm
        .rigs(&BTreeMap::new())
        .await
        .into_iter()
        .filter_map(|r| r.lease)
        .map(|mut l| {
            // A restart gives job leases a fresh grace period: the one field that changes.
            if l.kind == LeaseKind::Job {
                l.expires_ms = 0;
            }
            (l.id.clone(), l)
        })
        .collect();
    // Every waiting request as stored (class, age, selector, expiry): that decides the order at any moment. The
    // order itself is not compared: time passes across a restart, and aging reorders on its own.
    let mut queue: Vec<String> = farm
        .queue()
        .await
        .into_iter()
        .map(|q| serde_json::to_string(&q.request).expect("requests serialize"))
        .collect();
    queue.sort();
    (
        serde_json::to_string(&jobs).expect("jobs serialize"),
        leases,
        queue,
    )
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else {
        return;
    };
    if ops.is_empty() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(drive(ops));
}

async fn drive(ops: Vec<Op>) {
    let dir = tempfile::Builder::new()
        .prefix("nvfarm-fuzz-")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("a temporary directory");
    let mut farm = Farm::open(config(dir.path()))
        .await
        .expect("a fresh farm opens");
    let mut api = FarmService { farm: farm.clone() };
    let mut sessions: HashMap<&'static str, Session> = HashMap::new();
    let mut watches: HashMap<String, WatchGuard> = HashMap::new();
    let mut seen = Seen::default();
    let mut slept = Duration::ZERO;
    let mut restarts = 0;
    // The farm starts in service: agent a with r1-r3 (model X), agent b with r4 (model Y).
    let prologue = [
        Op::Connect {
            agent: 0,
            rigs: 0b0111,
            held: vec![],
        },
        Op::Connect {
            agent: 1,
            rigs: 0b1000,
            held: vec![],
        },
    ];
    for op in prologue {
        apply(
            op,
            &farm,
            &api,
            &mut sessions,
            &mut watches,
            &mut seen,
            &mut slept,
        )
        .await;
    }
    for (step, op) in ops.into_iter().enumerate() {
        let what = format!("step {step}: {op:?}");
        if matches!(op, Op::Restart) && restarts < MAX_RESTARTS {
            restarts += 1;
            let before = records(&farm).await;
            // The controller goes away: sessions and watching clients with it.
            watches.clear();
            sessions.clear();
            drop(api);
            farm.flush().expect("the store flushes");
            drop(farm);
            farm = reopen(dir.path()).await;
            api = FarmService { farm: farm.clone() };
            let after = records(&farm).await;
            assert_eq!(
                after.0, before.0,
                "{what}: a restart rebuilds every job as acknowledged"
            );
            assert_eq!(
                after.1, before.1,
                "{what}: a restart rebuilds every lease as acknowledged"
            );
            assert_eq!(
                after.2, before.2,
                "{what}: a restart keeps every waiting request as it was"
            );
        } else {
            apply(
                op,
                &farm,
                &api,
                &mut sessions,
                &mut watches,
                &mut seen,
                &mut slept,
            )
            .await;
        }
        check(&farm, &mut seen, &mut sessions, &what).await;
    }
    drop(watches);
    drop(api);
}

async fn apply(
    op: Op,
    farm: &Arc<Farm>,
    api: &FarmService,
    sessions: &mut HashMap<&'static str, Session>,
    watches: &mut HashMap<String, WatchGuard>,
    seen: &mut Seen,
    slept: &mut Duration,
) {
    let agent = |i: u8| AGENTS[i as usize % AGENTS.len()];
    let token_of = async |farm: &Farm, job: &str, t: Token| -> u64 {
        let right = farm.job(job).await.map(|j| j.fencing_token).unwrap_or(0);
        match t {
            Token::Right => right,
            Token::Older => right.saturating_sub(1),
            Token::Newer => right.saturating_add(1),
            Token::Raw(n) => n,
        }
    };
    match op {
        Op::Connect {
            agent: a,
            rigs,
            held,
        } => {
            let name = agent(a);
            let (tx, rx) = mpsc::unbounded_channel();
            let conn = farm.agent_connected(name, tx).await;
            let mut jobs = vec![];
            for (p, rig, t, outcome) in held.into_iter().take(4) {
                let job_id = Seen::pick(&seen.jobs, p, "job-999999");
                let fencing_token = token_of(farm, &job_id, t).await;
                jobs.push(HeldJob {
                    result: outcome.map(|o| {
                        JobResult::early(&job_id, fencing_token, outcome_of(o), "held".into())
                    }),
                    job_id,
                    rig: RIGS[rig as usize % RIGS.len()].into(),
                    fencing_token,
                });
            }
            let reg = Registration {
                agent: name.into(),
                rigs: RIGS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| rigs & (1 << i) != 0)
                    .map(|(i, r)| AgentRig {
                        name: r.to_string(),
                        labels: [(
                            "model".to_string(),
                            if i < 3 { "X" } else { "Y" }.to_string(),
                        )]
                        .into(),
                        drive_serial: format!("S{i}"),
                        drive_model: "NVFARM SIM X1".into(),
                        firmware_revision: "1.0.0".into(),
                        newest_token: 0,
                        probing: false,
                    })
                    .collect(),
                jobs,
                version: "fuzz".into(),
            };
            // Refused registrations (a rig owned by another agent) are an answer too.
            let _ = farm.agent_register(name, conn, reg).await;
            sessions.insert(name, Session { conn, rx });
        }
        Op::Disconnect { agent: a } => {
            if let Some(s) = sessions.remove(agent(a)) {
                farm.agent_disconnected(agent(a), s.conn).await;
            }
        }
        Op::Heartbeat { agent: a, running } => {
            if let Some(s) = sessions.get(agent(a)) {
                let running_job_ids = running
                    .into_iter()
                    .take(4)
                    .map(|p| Seen::pick(&seen.jobs, p, "job-999999"))
                    .collect();
                farm.agent_heartbeat(
                    agent(a),
                    s.conn,
                    &Heartbeat {
                        seq: 1,
                        running_job_ids,
                    },
                )
                .await;
            }
        }
        Op::Progress {
            agent: a,
            job,
            token,
            phase,
            lines,
        } => {
            let job_id = Seen::pick(&seen.jobs, job, "job-999999");
            let fencing_token = token_of(farm, &job_id, token).await;
            let phase = match phase % 4 {
                0 => None,
                1 => Some(JobState::Flashing),
                2 => Some(JobState::Testing),
                _ => Some(JobState::Passed),
            };
            let _ = farm
                .agent_progress(
                    agent(a),
                    JobProgress {
                        job_id,
                        fencing_token,
                        phase,
                        lines: (0..lines % 8)
                            .map(|i| LogLine {
                                step: u32::from(i),
                                text: format!("line {i}"),
                            })
                            .collect(),
                        steps: vec![],
                    },
                )
                .await;
        }
        Op::Result {
            agent: a,
            job,
            token,
            outcome,
            steps,
        } => {
            let job_id = Seen::pick(&seen.jobs, job, "job-999999");
            let fencing_token = token_of(farm, &job_id, token).await;
            let mut r =
                JobResult::early(&job_id, fencing_token, outcome_of(outcome), "done".into());
            r.steps = (1..=u32::from(steps % 4))
                .map(|n| StepReport {
                    number: n,
                    name: format!("{n}-smart"),
                    kind: "smart".into(),
                    outcome: outcome_of(outcome.wrapping_add(n as u8)),
                    duration_ms: u64::from(n),
                    message: String::new(),
                    log: vec![],
                    metrics: BTreeMap::new(),
                })
                .collect();
            let _ = farm.agent_result(agent(a), r).await;
        }
        Op::Refuse {
            agent: a,
            job,
            token,
        } => {
            let job_id = Seen::pick(&seen.jobs, job, "job-999999");
            let fencing_token = token_of(farm, &job_id, token).await;
            let _ = farm
                .agent_refused(
                    agent(a),
                    Refusal {
                        job_id,
                        fencing_token,
                        reason: "fuzz".into(),
                    },
                )
                .await;
        }
        Op::Submit {
            who,
            sel,
            plan,
            timeout,
            priority,
            wait,
        } => {
            let plan_toml = match plan {
                PlanPick::Smart => SMART,
                PlanPick::Flash => FLASH,
                PlanPick::Script => SCRIPT,
                PlanPick::Broken => "name = [",
            };
            let r = api
                .submit_job(request(
                    who,
                    pb::SubmitJobRequest {
                        selector: selector(sel),
                        plan_toml: plan_toml.into(),
                        timeout_ms: timeout.ms(),
                        priority: i32::from(priority % 5),
                        wait,
                        ..Default::default()
                    },
                ))
                .await;
            if let Some(j) = answered("submit", r) {
                Seen::note(&mut seen.jobs, &j.id);
            }
        }
        Op::CancelJob { who, job } => {
            let id = Seen::pick(&seen.jobs, job, "job-999999");
            let caller = resolve(who, farm.job(&id).await.ok().map(|j| j.submitter));
            let _ = answered(
                "cancel job",
                api.cancel_job(as_caller(caller, pb::CancelJobRequest { id }))
                    .await,
            );
        }
        Op::Reserve {
            who,
            sel,
            priority,
            duration,
            wait,
            detach,
            watch,
        } => {
            let r = api
                .reserve(request(
                    who,
                    pb::ReserveRequest {
                        selector: selector(sel),
                        duration_ms: duration.ms(),
                        priority: i32::from(priority % 5),
                        wait,
                        detach,
                        holder: String::new(),
                    },
                ))
                .await;
            if let Some(r) = answered("reserve", r) {
                if let Some(l) = r.lease {
                    Seen::note(&mut seen.leases, &l.id);
                }
                if !r.request_id.is_empty() {
                    Seen::note(&mut seen.requests, &r.request_id);
                    if watch {
                        let g = farm.watching(&r.request_id).await;
                        watches.insert(r.request_id, g);
                    }
                }
            }
        }
        Op::Release { who, lease } => {
            let lease_id = Seen::pick(&seen.leases, lease, "lease-999999");
            let caller = resolve(who, holder(farm, &lease_id).await);
            let _ = answered(
                "release",
                api.release(as_caller(caller, pb::ReleaseRequest { lease_id }))
                    .await,
            );
        }
        Op::Extend {
            who,
            lease,
            duration,
        } => {
            let lease_id = Seen::pick(&seen.leases, lease, "lease-999999");
            let caller = resolve(who, holder(farm, &lease_id).await);
            let _ = answered(
                "extend",
                api.extend(as_caller(
                    caller,
                    pb::ExtendRequest {
                        lease_id,
                        duration_ms: duration.ms(),
                    },
                ))
                .await,
            );
        }
        Op::Withdraw { who, request: p } => {
            let request_id = Seen::pick(&seen.requests, p, "req-999999");
            let owner = farm
                .queue()
                .await
                .into_iter()
                .find(|q| q.request.id == request_id)
                .map(|q| q.request.holder);
            let _ = answered(
                "withdraw",
                api.cancel_request(as_caller(
                    resolve(who, owner),
                    pb::CancelRequestRequest { request_id },
                ))
                .await,
            );
        }
        Op::Claim { lease } => {
            let id = Seen::pick(&seen.leases, lease, "lease-999999");
            let _ = farm.claim(&id).await;
        }
        Op::Unwatch { request: p } => {
            let id = Seen::pick(&seen.requests, p, "req-999999");
            watches.remove(&id);
        }
        Op::RigState {
            who,
            rig,
            action,
            reason,
        } => {
            let action = ["quarantine", "maintenance", "restore", "explode"][action as usize % 4];
            let _ = answered(
                "rig state",
                api.set_rig_state(request(
                    who,
                    pb::SetRigStateRequest {
                        rig: RIGS[rig as usize % RIGS.len()].into(),
                        action: action.into(),
                        reason: reason.chars().take(200).collect(),
                    },
                ))
                .await,
            );
        }
        Op::MoveRig { who, rig, to } => {
            let _ = answered(
                "move rig",
                api.move_rig(request(
                    who,
                    pb::MoveRigRequest {
                        rig: RIGS[rig as usize % RIGS.len()].into(),
                        agent: agent(to).into(),
                    },
                ))
                .await,
            );
        }
        Op::Tick => {
            let _ = farm.tick().await;
        }
        Op::Sleep { ms } => {
            let d =
                Duration::from_millis(u64::from(ms % 40)).min(SLEEP_BUDGET.saturating_sub(*slept));
            *slept += d;
            tokio::time::sleep(d).await;
            let _ = farm.tick().await;
        }
        // drive() restarts the farm itself.
        Op::Restart => {}
    }
}

/// Opens the farm again from its store (the previous one may take a moment to let go of the store's lock).
async fn reopen(dir: &std::path::Path) -> Arc<Farm> {
    let mut last = None;
    for _ in 0..200 {
        match Farm::open(config(dir)).await {
            Ok(f) => return f,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    panic!("the store does not reopen after a restart: {last:?}");
}

fn outcome_of(v: u8) -> Outcome {
    [
        Outcome::Passed,
        Outcome::Failed,
        Outcome::Error,
        Outcome::Cancelled,
        Outcome::TimedOut,
        Outcome::Invalid,
        Outcome::Skipped,
    ][v as usize % 7]
}

async fn check(
    farm: &Farm,
    seen: &mut Seen,
    sessions: &mut HashMap<&'static str, Session>,
    what: &str,
) {
    if let Err(v) = farm.audit().await {
        panic!("{what}: the farm's invariants broke:\n{v}");
    }
    // What the agents were sent names jobs and leases the next steps can use.
    for s in sessions.values_mut() {
        while let Ok(m) = s.rx.try_recv() {
            if let ToAgent::Assign(a) = m {
                Seen::note(&mut seen.jobs, &a.job_id);
            }
        }
    }
    for j in farm.jobs(&JobFilter::default()).await.expect("jobs list") {
        Seen::note(&mut seen.jobs, &j.id);
        if let Some(l) = &j.lease_id {
            Seen::note(&mut seen.leases, l);
        }
        if let Some(was) = seen.ended.get(&j.id) {
            assert_eq!(
                j.state, *was,
                "{what}: job {} ended {was:?} and then changed",
                j.id
            );
        } else if j.state.is_terminal() {
            seen.ended.insert(j.id.clone(), j.state);
        }
    }
    for r in farm.queue().await {
        Seen::note(&mut seen.requests, &r.request.id);
    }
    let mut fresh = vec![];
    for r in farm.rigs(&BTreeMap::new()).await {
        let Some(l) = r.lease else { continue };
        Seen::note(&mut seen.leases, &l.id);
        match seen.tokens.get(&l.id) {
            Some(&t) => assert_eq!(
                t, l.fencing_token,
                "{what}: lease {} changed its token",
                l.id
            ),
            // A hold for a job the agent still runs after the farm let it go carries that job's old token
            // (`stopping = "abandoned"`): it is not a grant, so it need not be newer than the last grant.
            None if l.stopping.is_some() => {
                seen.tokens.insert(l.id.clone(), l.fencing_token);
            }
            None => fresh.push((l.id.clone(), l.fencing_token)),
        }
    }
    for (id, t) in fresh {
        assert!(
            t > seen.newest_token,
            "{what}: new lease {id} has token {t}, not above the newest seen ({})",
            seen.newest_token
        );
        seen.tokens.insert(id, t);
    }
    seen.newest_token = seen.tokens.values().copied().max().unwrap_or(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve_and_release(rig: u8) -> [Op; 2] {
        [
            Op::Reserve {
                who: Who::Alice,
                sel: Sel::Rig(rig),
                priority: 0,
                duration: Dur::Default,
                wait: false,
                detach: false,
                watch: false,
            },
            Op::Release {
                who: Who::Owner,
                lease: Pick::Newest,
            },
        ]
    }

    /// The harness reaches the states it is for: grants, releases, jobs through their agent, restarts. (Run
    /// with a broken farm, e.g. a release that forgets to drop its lease, this panics.)
    #[test]
    fn a_plain_day_at_the_farm_keeps_every_invariant() {
        let mut ops: Vec<Op> = (0..4).flat_map(|_| reserve_and_release(0)).collect();
        ops.push(Op::Submit {
            who: Who::Ci,
            sel: Sel::Model,
            plan: PlanPick::Smart,
            timeout: Dur::Default,
            priority: 1,
            wait: true,
        });
        ops.push(Op::Result {
            agent: 0,
            job: Pick::Newest,
            token: Token::Right,
            outcome: 0,
            steps: 1,
        });
        ops.push(Op::Restart);
        ops.extend(reserve_and_release(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(drive(ops));
    }
}
