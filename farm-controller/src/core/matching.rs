//! What a selector can match, said before anything is queued: a selector no rig could ever match is the
//! caller's mistake (an unknown rig or label, with the names that would work), and rigs that exist but cannot
//! take work now (quarantined, in maintenance, offline) are named with their reasons. Pure functions.

use std::collections::BTreeSet;

use nvfarm_model::farm::{labels_text, Rig, RigState, Selector};

use super::scheduler::Records;

/// At most this many names in a list of alternatives.
const LIST_MAX: usize = 20;

/// The rigs `sel` matches, or why no rig could ever match it, with what would.
pub fn matching<'a>(rigs: &'a Records<Rig>, sel: &Selector) -> Result<Vec<&'a Rig>, String> {
    if rigs.is_empty() {
        return Err("the farm has no rigs yet: start a bench-agent with a rig file".into());
    }
    if let Some(name) = &sel.rig {
        if !rigs.contains_key(name) {
            let names: Vec<&str> = rigs.keys().map(String::as_str).collect();
            return Err(format!(
                "no rig named '{name}'{}; rigs: {}",
                did_you_mean(name, &names),
                list(&names)
            ));
        }
    }
    for (k, v) in &sel.labels {
        let values: BTreeSet<&str> = rigs
            .values()
            .filter_map(|r| r.labels.get(k).map(String::as_str))
            .collect();
        if values.is_empty() {
            let keys: BTreeSet<&str> = rigs
                .values()
                .flat_map(|r| r.labels.keys().map(String::as_str))
                .collect();
            let keys: Vec<&str> = keys.into_iter().collect();
            return Err(format!(
                "no rig has a label '{k}'{}; label keys: {}",
                did_you_mean(k, &keys),
                list(&keys)
            ));
        }
        if !values.contains(v.as_str()) {
            let values: Vec<&str> = values.into_iter().collect();
            return Err(format!(
                "no rig has {k}={v}{}; values of {k}: {}",
                did_you_mean(v, &values),
                list(&values)
            ));
        }
    }
    let m: Vec<&Rig> = rigs.values().filter(|r| sel.matches(r)).collect();
    if m.is_empty() {
        // Each part matches some rig, the whole matches none.
        let closest: Vec<String> = rigs
            .values()
            .filter(|r| sel.rig.as_ref().is_none_or(|n| *n == r.name))
            .map(|r| format!("{} ({})", r.name, labels_text(&r.labels)))
            .take(LIST_MAX)
            .collect();
        return Err(format!(
            "no rig is {}; rigs: {}",
            sel.describe(),
            closest.join(", ")
        ));
    }
    Ok(m)
}

/// Why a rig cannot take work now (`None`: it can, now or once its current holder is done).
pub fn unusable(rig: &Rig) -> Option<String> {
    let why = |what: &str| {
        if rig.reason.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", rig.reason)
        }
    };
    match rig.state {
        RigState::Quarantined => Some(why("quarantined")),
        RigState::Maintenance => Some(why("in maintenance")),
        RigState::Offline => Some(why("offline")),
        // A probe is bounded: the rig is idle within seconds.
        RigState::Idle | RigState::Leased | RigState::Probing => None,
    }
}

/// When every rig in `matching` is unusable: the reasons, one per rig.
pub fn all_unusable(matching: &[&Rig]) -> Option<String> {
    let reasons: Vec<String> = matching
        .iter()
        .map(|r| unusable(r).map(|why| format!("{} {why}", r.name)))
        .collect::<Option<_>>()?;
    Some(reasons.join("; "))
}

/// ` (did you mean 'x'?)` for the closest name, when one is close.
fn did_you_mean(wrong: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| (strsim::damerau_levenshtein(wrong, n), *n))
        // Close means a typo or two, never most of the name (one letter against another is no suggestion).
        .filter(|(d, n)| *d < wrong.len().min(n.len()) && *d <= 2.max(n.len() / 3))
        .min()
        .map(|(_, n)| format!(" (did you mean '{n}'?)"))
        .unwrap_or_default()
}

fn list(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(LIST_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_MAX {
        s.push_str(&format!(" and {} more", names.len() - LIST_MAX));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvfarm_model::farm::parse_labels;

    fn rigs() -> Records<Rig> {
        let mut m = Records::new();
        for (name, labels, state) in [
            ("bench-r1", "model=X1,site=lab", RigState::Idle),
            ("bench-r2", "model=X1,site=lab", RigState::Quarantined),
            ("bench-r3", "model=X2,site=lab", RigState::Maintenance),
        ] {
            let mut r = Rig::new(name, "a", 0);
            r.labels = parse_labels(labels).unwrap();
            r.state = state;
            if state == RigState::Quarantined {
                r.reason = "2 consecutive infrastructure errors".into();
            }
            m.insert(name.to_string(), r);
        }
        m
    }

    #[test]
    fn an_unknown_rig_suggests_the_closest_and_lists_the_rest() {
        let e = matching(&rigs(), &Selector::rig("bench-rl")).unwrap_err();
        assert!(e.contains("no rig named 'bench-rl'"), "{e}");
        assert!(e.contains("did you mean 'bench-r1'?"), "{e}");
        assert!(e.contains("rigs: bench-r1, bench-r2, bench-r3"), "{e}");
    }

    #[test]
    fn unknown_label_keys_and_values_list_the_known_ones() {
        let sel = |l: &str| Selector::labels(parse_labels(l).unwrap());
        let e = matching(&rigs(), &sel("modle=X1")).unwrap_err();
        assert!(
            e.contains(
                "no rig has a label 'modle' (did you mean 'model'?); label keys: model, site"
            ),
            "{e}"
        );
        let e = matching(&rigs(), &sel("model=X9")).unwrap_err();
        assert!(e.contains("no rig has model=X9"), "{e}");
        assert!(e.contains("values of model: X1, X2"), "{e}");
        let e = matching(&rigs(), &sel("model=X2,site=lab")).map(|m| m.len());
        assert_eq!(e, Ok(1));
    }

    #[test]
    fn a_combination_no_rig_has_is_named() {
        let mut sel = Selector::rig("bench-r3");
        sel.labels = parse_labels("model=X1").unwrap();
        let e = matching(&rigs(), &sel).unwrap_err();
        assert!(e.contains("no rig is rig bench-r3 with model=X1"), "{e}");
        assert!(e.contains("bench-r3 (model=X2,site=lab)"), "{e}");
    }

    #[test]
    fn only_rigs_that_are_all_unusable_say_why() {
        let r = rigs();
        let q = [&r["bench-r2"]];
        assert_eq!(
            all_unusable(&q).as_deref(),
            Some("bench-r2 quarantined: 2 consecutive infrastructure errors")
        );
        let mixed = [&r["bench-r1"], &r["bench-r2"]];
        assert_eq!(all_unusable(&mixed), None);
        let both = [&r["bench-r2"], &r["bench-r3"]];
        assert!(all_unusable(&both)
            .unwrap()
            .contains("bench-r3 in maintenance"));
    }
}
