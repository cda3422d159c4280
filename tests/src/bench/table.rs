//! The benchmark's table: one row per measurement, nvfarm's number, labgrid's for the same operation, and the
//! target the controller is held to where there is one. Values absent from a side print as "n/a" and every
//! "n/a" that has a reason gets it printed under the table.

use serde_json::Value;

/// How a value prints.
#[derive(Clone, Copy)]
enum Unit {
    Ms,
    PerSec,
    Secs,
    Pct,
    MiB,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

fn show(v: Option<f64>, u: Unit) -> String {
    let Some(x) = v else {
        return "n/a".into();
    };
    match u {
        Unit::Ms if x < 10.0 => format!("{x:.2} ms"),
        Unit::Ms => format!("{x:.1} ms"),
        Unit::PerSec => format!("{x:.0}/s"),
        Unit::Secs => format!("{x:.2} s"),
        Unit::Pct => format!("{x:.1} %"),
        Unit::MiB => format!("{x:.1} MiB"),
    }
}

/// `side[path...]`, following object keys.
fn at<'a>(side: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(side, |v, k| &v[*k])
}

struct Row {
    what: String,
    path: Vec<String>,
    unit: Unit,
    target: &'static str,
}

fn row(what: impl Into<String>, path: &[&str], unit: Unit, target: &'static str) -> Row {
    Row {
        what: what.into(),
        path: path.iter().map(|s| s.to_string()).collect(),
        unit,
        target,
    }
}

fn rows(depths: &[String]) -> Vec<Row> {
    let mut r = vec![row(
        "reserve+release via CLI, p50",
        &["cli_cycle", "p50_ms"],
        Unit::Ms,
        "",
    )];
    for c in ["1", "8", "32"] {
        let target = if c == "32" { ">= 2000/s" } else { "" };
        r.push(row(
            format!("gRPC cycles/s, {c} client(s)"),
            &["grpc", c, "cycles_per_s"],
            Unit::PerSec,
            target,
        ));
        r.push(row(
            format!("gRPC cycle p50, {c} client(s)"),
            &["grpc", c, "p50_ms"],
            Unit::Ms,
            "",
        ));
        r.push(row(
            format!("gRPC cycle p99, {c} client(s)"),
            &["grpc", c, "p99_ms"],
            Unit::Ms,
            "",
        ));
    }
    r.push(row(
        "release -> grant seen by waiter, p50",
        &["release_grant", "p50_ms"],
        Unit::Ms,
        "",
    ));
    r.push(row(
        "release -> grant seen by waiter, p99",
        &["release_grant", "p99_ms"],
        Unit::Ms,
        "< 2 ms",
    ));
    r.push(row(
        "agent with 1000 rigs registered",
        &["register_1000", "s"],
        Unit::Secs,
        "< 1 s",
    ));
    r.push(row(
        "list 1000 rigs via CLI, p50",
        &["list_1000", "p50_ms"],
        Unit::Ms,
        "",
    ));
    r.push(row(
        "list 1000 rigs via CLI, p99",
        &["list_1000", "p99_ms"],
        Unit::Ms,
        "",
    ));
    r.push(row(
        "controller RSS, 1000 rigs",
        &["list_1000", "rss_mib"],
        Unit::MiB,
        "",
    ));
    for d in depths {
        let d = d.as_str();
        let big = d == "10000";
        r.push(row(
            format!("building a queue of {d}"),
            &["queued", d, "create_s"],
            Unit::Secs,
            "",
        ));
        r.push(row(
            format!("unrelated reserve+release p50, {d} queued"),
            &["queued", d, "reserve_p50_ms"],
            Unit::Ms,
            "",
        ));
        r.push(row(
            format!("unrelated reserve+release p99, {d} queued"),
            &["queued", d, "reserve_p99_ms"],
            Unit::Ms,
            if big { "< 5 ms" } else { "" },
        ));
        r.push(row(
            format!("list the queue, {d} queued"),
            &["queued", d, "list_ms"],
            Unit::Ms,
            "",
        ));
        r.push(row(
            format!("idle controller CPU, {d} queued"),
            &["queued", d, "idle_cpu_pct"],
            Unit::Pct,
            if big { "< 2 %" } else { "" },
        ));
        r.push(row(
            format!("controller RSS, {d} queued"),
            &["queued", d, "rss_mib"],
            Unit::MiB,
            if big { "< 100 MiB" } else { "" },
        ));
    }
    r
}

/// The table, nvfarm's numbers beside labgrid's (when given).
pub fn table(farm: &Value, labgrid: Option<&Value>) -> String {
    let mut depths: Vec<String> = farm["queued"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    depths.sort_by_key(|d| d.parse::<u64>().unwrap_or(u64::MAX));
    let lg_name = labgrid
        .map(|l| format!("labgrid {}", l["version"].as_str().unwrap_or("?")))
        .unwrap_or_else(|| "labgrid (not run)".into());
    let header = ["measurement", "nvfarm", lg_name.as_str(), "target"];
    let mut lines: Vec<[String; 4]> = vec![header.map(String::from)];
    let mut notes = vec![];
    for r in rows(&depths) {
        let path: Vec<&str> = r.path.iter().map(String::as_str).collect();
        let cell = |side: Option<&Value>, who: &str, notes: &mut Vec<String>| {
            let Some(side) = side else {
                return "n/a".to_string();
            };
            let v = at(side, &path);
            if v.is_null() {
                // A whole group not measured says why once.
                if let Some(why) = at(side, &path[..path.len() - 1])["n/a"].as_str() {
                    let n = format!("{who}, {}: {why}", path[..path.len() - 1].join("."));
                    if !notes.contains(&n) {
                        notes.push(n);
                    }
                }
            }
            show(num(v), r.unit)
        };
        let f = cell(Some(farm), "nvfarm", &mut notes);
        let l = cell(labgrid, "labgrid", &mut notes);
        lines.push([r.what.clone(), f, l, r.target.to_string()]);
    }
    let w: Vec<usize> = (0..4)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (n, l) in lines.iter().enumerate() {
        s.push_str(&format!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:<w3$} |\n",
            l[0],
            l[1],
            l[2],
            l[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        ));
        if n == 0 {
            s.push_str(&format!(
                "|{}|{}:|{}:|{}|\n",
                "-".repeat(w[0] + 2),
                "-".repeat(w[1] + 1),
                "-".repeat(w[2] + 1),
                "-".repeat(w[3] + 2)
            ));
        }
    }
    for n in notes {
        s.push_str(&format!("n/a: {n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_sides_print_beside_each_other_and_missing_ones_say_why() {
        let farm = json!({"cli_cycle": {"p50_ms": 12.345}, "grpc": {"32": {"cycles_per_s": 2500.4}},
            "queued": {"2000": {"reserve_p99_ms": 1.5}, "10000": {"n/a": "too slow"}}});
        let lg = json!({"version": "26.0.1", "cli_cycle": {"p50_ms": 774.9}});
        let t = table(&farm, Some(&lg));
        assert!(t.contains("labgrid 26.0.1"), "{t}");
        let cli = t.lines().find(|l| l.contains("via CLI, p50")).unwrap();
        assert!(cli.contains("12.3 ms") && cli.contains("774.9 ms"), "{cli}");
        let cps = t.lines().find(|l| l.contains("cycles/s, 32")).unwrap();
        assert!(cps.contains("2500/s") && cps.contains(">= 2000/s"), "{cps}");
        let q = t.lines().find(|l| l.contains("p99, 2000 queued")).unwrap();
        assert!(q.contains("1.50 ms"), "{q}");
        assert!(t.contains("n/a: nvfarm, queued.10000: too slow"), "{t}");
        // The 2000 group comes before the 10000 group.
        assert!(t.find("2000 queued").unwrap() < t.find("10000 queued").unwrap());
    }
}
