//! The waiting requests, indexed by what they can match: requests are grouped by selector (requests with the
//! same selector compete for exactly the same rigs), and each selector is filed under the one thing that
//! narrows it most cheaply (the rig it names, one label it needs, or nothing for "any rig"). So the scheduler,
//! positions and watchers look only at the requests that could take a given rig, never at the whole queue.
//!
//! Persistent maps throughout: a [`Queue`] clones in O(1), so it is marked and rolled back with the other
//! records. Reads go through `Deref` to the records by id; every write goes through [`Queue::insert`] and
//! [`Queue::remove`], which keep the indexes in step.

use std::collections::BTreeSet;
use std::ops::Deref;

use imbl::{OrdMap, OrdSet};
use nvfarm_model::farm::{Request, Rig, Selector};

use super::scheduler::Records;

/// What a selector is filed under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    /// It names this rig.
    Rig(String),
    /// It needs this label (its first one).
    Label(String, String),
    /// It takes any rig.
    Any,
}

fn key(sel: &Selector) -> Key {
    match (&sel.rig, sel.labels.iter().next()) {
        (Some(r), _) => Key::Rig(r.clone()),
        (None, Some((k, v))) => Key::Label(k.clone(), v.clone()),
        (None, None) => Key::Any,
    }
}

/// The waiting requests and their indexes.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    by_id: Records<Request>,
    /// Request ids by selector.
    groups: OrdMap<Selector, OrdSet<String>>,
    /// Selectors with waiting requests, by what narrows them.
    by_key: OrdMap<Key, OrdSet<Selector>>,
    /// A job's request, by job id.
    by_job: OrdMap<String, String>,
}

impl Deref for Queue {
    type Target = Records<Request>;
    fn deref(&self) -> &Records<Request> {
        &self.by_id
    }
}

impl FromIterator<Request> for Queue {
    fn from_iter<I: IntoIterator<Item = Request>>(iter: I) -> Self {
        let mut q = Queue::default();
        for r in iter {
            q.insert(r);
        }
        q
    }
}

impl Queue {
    /// Adds (or replaces) a waiting request.
    pub fn insert(&mut self, req: Request) {
        self.remove(&req.id);
        self.groups
            .entry(req.selector.clone())
            .or_default()
            .insert(req.id.clone());
        self.by_key
            .entry(key(&req.selector))
            .or_default()
            .insert(req.selector.clone());
        if let Some(j) = &req.job_id {
            self.by_job.insert(j.clone(), req.id.clone());
        }
        self.by_id.insert(req.id.clone(), req);
    }

    /// Takes a request out of the queue.
    pub fn remove(&mut self, id: &str) -> Option<Request> {
        let req = self.by_id.remove(id)?;
        let emptied = self.groups.get_mut(&req.selector).is_some_and(|g| {
            g.remove(id);
            g.is_empty()
        });
        if emptied {
            self.groups.remove(&req.selector);
            let k = key(&req.selector);
            let none_left = self.by_key.get_mut(&k).is_some_and(|s| {
                s.remove(&req.selector);
                s.is_empty()
            });
            if none_left {
                self.by_key.remove(&k);
            }
        }
        if let Some(j) = &req.job_id {
            if self.by_job.get(j).is_some_and(|r| r == id) {
                self.by_job.remove(j);
            }
        }
        Some(req)
    }

    /// Job `job_id`'s waiting request.
    pub fn for_job(&self, job_id: &str) -> Option<&Request> {
        self.by_job.get(job_id).and_then(|id| self.by_id.get(id))
    }

    /// The waiting requests with exactly this selector.
    pub fn group<'a>(&'a self, sel: &Selector) -> impl Iterator<Item = &'a Request> + 'a {
        self.groups
            .get(sel)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.by_id.get(id))
    }

    /// How many distinct selectors have waiting requests.
    pub fn selectors(&self) -> impl Iterator<Item = &Selector> {
        self.groups.keys()
    }

    /// The selectors of waiting requests that could take `rig` (whatever its state), each once.
    pub fn selectors_for<'a>(&'a self, rig: &'a Rig) -> impl Iterator<Item = &'a Selector> + 'a {
        std::iter::once(Key::Rig(rig.name.clone()))
            .chain(
                rig.labels
                    .iter()
                    .map(|(k, v)| Key::Label(k.clone(), v.clone())),
            )
            .chain(std::iter::once(Key::Any))
            .filter_map(|k| self.by_key.get(&k))
            .flat_map(|s| s.iter())
            .filter(move |s| s.matches(rig))
    }

    /// The selectors competing with `sel`: those of waiting requests that could take a rig `sel` can take
    /// (`sel` itself included).
    pub fn competing<'a>(
        &'a self,
        rigs: &'a Records<Rig>,
        sel: &'a Selector,
    ) -> BTreeSet<&'a Selector> {
        let mut out = BTreeSet::new();
        if let Some(s) = self.groups.get_key_value(sel).map(|(k, _)| k) {
            out.insert(s);
        }
        let mut add = |r: &'a Rig| out.extend(self.selectors_for(r));
        match &sel.rig {
            Some(name) => rigs
                .get(name)
                .into_iter()
                .filter(|r| sel.matches(r))
                .for_each(&mut add),
            None => rigs.values().filter(|r| sel.matches(r)).for_each(&mut add),
        }
        out
    }

    /// Whether the indexes agree with the records (for the audit): one line per disagreement.
    pub fn index_violations(&self) -> Vec<String> {
        let mut v = vec![];
        let mut grouped = 0;
        for (sel, ids) in &self.groups {
            for id in ids {
                grouped += 1;
                match self.by_id.get(id) {
                    Some(r) if &r.selector == sel => {}
                    _ => v.push(format!(
                        "the queue index files {id} under {}, which it is not",
                        sel.describe()
                    )),
                }
            }
            if !self.by_key.get(&key(sel)).is_some_and(|s| s.contains(sel)) {
                v.push(format!("the queue index has no key for {}", sel.describe()));
            }
        }
        if grouped != self.by_id.len() {
            v.push(format!(
                "the queue index groups {grouped} requests but {} wait",
                self.by_id.len()
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvfarm_model::farm::{Priority, RigState};

    fn req(id: &str, selector: Selector) -> Request {
        Request {
            id: id.into(),
            selector,
            priority: Priority::Ci,
            holder: "u".into(),
            created_ms: 1,
            duration_ms: 1000,
            job_id: None,
            detached: false,
            expires_ms: 0,
        }
    }

    fn rig(name: &str, labels: &[(&str, &str)]) -> Rig {
        let mut r = Rig::new(name, "a", 0);
        r.state = RigState::Idle;
        for (k, v) in labels {
            r.labels.insert(k.to_string(), v.to_string());
        }
        r
    }

    fn labels(l: &[(&str, &str)]) -> Selector {
        Selector::labels(
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_rig_finds_exactly_the_selectors_that_match_it() {
        let q: Queue = [
            req("1", Selector::rig("x1")),
            req("2", Selector::rig("y1")),
            req("3", labels(&[("model", "X")])),
            req("4", labels(&[("model", "X"), ("slot", "2")])),
            req("5", labels(&[("model", "Y")])),
            req("6", Selector::default()),
            req("7", labels(&[("model", "X")])),
        ]
        .into_iter()
        .collect();
        let x1 = rig("x1", &[("model", "X"), ("slot", "1")]);
        let mut found: Vec<String> = q.selectors_for(&x1).map(|s| s.describe()).collect();
        found.sort();
        assert_eq!(found, ["any rig", "model=X", "rig x1"]);
        assert_eq!(q.group(&labels(&[("model", "X")])).count(), 2);
        assert!(q.index_violations().is_empty());
    }

    #[test]
    fn removing_the_last_request_of_a_selector_drops_it_from_the_index() {
        let mut q = Queue::default();
        q.insert(req("1", Selector::rig("x1")));
        let mut j = req("2", Selector::rig("x1"));
        j.job_id = Some("job-1".into());
        q.insert(j);
        let x1 = rig("x1", &[]);
        assert_eq!(q.selectors_for(&x1).count(), 1);
        assert_eq!(q.for_job("job-1").map(|r| r.id.as_str()), Some("2"));
        q.remove("2");
        assert!(q.for_job("job-1").is_none());
        assert_eq!(
            q.selectors_for(&x1).count(),
            1,
            "request 1 still waits for x1"
        );
        q.remove("1");
        assert_eq!(q.selectors_for(&x1).count(), 0);
        assert!(q.is_empty() && q.index_violations().is_empty());
        let snapshot = q.clone();
        q.insert(req("3", Selector::rig("x1")));
        assert!(
            snapshot.is_empty(),
            "a clone is a snapshot: later changes do not reach it"
        );
    }

    #[test]
    fn competing_selectors_share_a_rig() {
        let rigs: Records<Rig> = [
            rig("x1", &[("model", "X")]),
            rig("x2", &[("model", "X")]),
            rig("y1", &[("model", "Y")]),
        ]
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
        let q: Queue = [
            req("1", Selector::rig("x1")),
            req("2", Selector::rig("x2")),
            req("3", labels(&[("model", "X")])),
            req("4", Selector::rig("y1")),
        ]
        .into_iter()
        .collect();
        let x1 = Selector::rig("x1");
        let mut c: Vec<String> = q
            .competing(&rigs, &x1)
            .iter()
            .map(|s| s.describe())
            .collect();
        c.sort();
        assert_eq!(c, ["model=X", "rig x1"]);
        let mx = labels(&[("model", "X")]);
        assert_eq!(
            q.competing(&rigs, &mx).len(),
            3,
            "model=X competes with x1 and x2"
        );
    }
}
