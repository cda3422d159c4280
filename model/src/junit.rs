//! JUnit XML for CI systems: one `<testcase>` per step; a failed step is a `<failure>`; an infrastructure error,
//! a timeout, invalid input or a cancellation an `<error>` whose `type` says which (`infrastructure`, `timeout`,
//! `invalid`, `cancelled`); a step that did not run `<skipped>`. Each testcase carries its step's log.

use std::fmt::Write;

use crate::outcome::Outcome;
use crate::report::RunReport;

/// Escapes text for XML attribute and element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The `type` of an `<error>`: what kind of problem it was.
pub fn error_type(o: Outcome) -> &'static str {
    match o {
        Outcome::TimedOut => "timeout",
        Outcome::Invalid => "invalid",
        Outcome::Cancelled => "cancelled",
        _ => "infrastructure",
    }
}

/// A document with one suite holding one testcase for a run that could not start or finish (no controller, no
/// rig, bad input): `<error type=...>` with the message, so a CI system shows why.
pub fn single_error(suite: &str, name: &str, error_type: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"{0}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\" time=\"0.000\">\n    <testcase name=\"{1}\" classname=\"{0}\" time=\"0.000\">\n      <error message=\"{2}\" type=\"{3}\"/>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
        escape(suite),
        escape(name),
        escape(message),
        escape(error_type)
    )
}

/// One `<testsuite>` for a run.
pub fn testsuite(report: &RunReport, suite_name: &str) -> String {
    let count = |o: &[Outcome]| {
        report
            .steps
            .iter()
            .filter(|s| o.contains(&s.outcome))
            .count()
    };
    let mut x = String::new();
    let _ = writeln!(
        x,
        r#"  <testsuite name="{}" tests="{}" failures="{}" errors="{}" skipped="{}" time="{:.3}">"#,
        escape(suite_name),
        report.steps.len(),
        count(&[Outcome::Failed]),
        count(&[
            Outcome::Error,
            Outcome::TimedOut,
            Outcome::Invalid,
            Outcome::Cancelled
        ]),
        count(&[Outcome::Skipped]),
        report.duration_ms as f64 / 1000.0
    );
    if let Some(fw) = &report.firmware {
        let _ = writeln!(x, "    <properties>");
        let _ = writeln!(
            x,
            r#"      <property name="firmware.sha256" value="{}"/>"#,
            escape(&fw.sha256)
        );
        if let Some(rev) = &fw.revision {
            let _ = writeln!(
                x,
                r#"      <property name="firmware.revision" value="{}"/>"#,
                escape(rev)
            );
        }
        let _ = writeln!(
            x,
            r#"      <property name="rig" value="{}"/>"#,
            escape(&report.rig)
        );
        let _ = writeln!(x, "    </properties>");
    }
    for s in &report.steps {
        let _ = writeln!(
            x,
            r#"    <testcase name="{}" classname="{}.{}" time="{:.3}">"#,
            escape(&format!("{:02} {} ({})", s.number, s.name, s.kind)),
            escape(&report.plan),
            escape(&report.rig),
            s.duration_ms as f64 / 1000.0
        );
        match s.outcome {
            Outcome::Passed => {}
            Outcome::Failed => {
                let _ = writeln!(
                    x,
                    r#"      <failure message="{}" type="failed"/>"#,
                    escape(&s.message)
                );
            }
            Outcome::Error | Outcome::TimedOut | Outcome::Invalid | Outcome::Cancelled => {
                let _ = writeln!(
                    x,
                    r#"      <error message="{}" type="{}"/>"#,
                    escape(&s.message),
                    error_type(s.outcome)
                );
            }
            Outcome::Skipped => {
                let _ = writeln!(x, r#"      <skipped message="{}"/>"#, escape(&s.message));
            }
        }
        if !s.log.is_empty() {
            let _ = writeln!(
                x,
                "      <system-out>{}</system-out>",
                escape(&s.log.join("\n"))
            );
        }
        let _ = writeln!(x, "    </testcase>");
    }
    let _ = writeln!(x, "  </testsuite>");
    x
}

/// A complete JUnit document for several runs (one suite each).
pub fn document(runs: &[(&RunReport, String)]) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for (r, name) in runs {
        x.push_str(&testsuite(r, name));
    }
    x.push_str("</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StepReport;

    fn step(n: u32, outcome: Outcome, msg: &str) -> StepReport {
        StepReport {
            number: n,
            name: format!("s{n}"),
            kind: "identify".into(),
            outcome,
            duration_ms: 1500,
            message: msg.into(),
            log: vec!["line <1>".into()],
            metrics: Default::default(),
        }
    }

    #[test]
    fn each_outcome_has_its_element() {
        let r = RunReport {
            plan_changes: Vec::new(),
            plan: "smoke".into(),
            rig: "r1".into(),
            firmware: None,
            outcome: Outcome::Error,
            started_at_ms: 0,
            duration_ms: 6000,
            steps: vec![
                step(1, Outcome::Passed, "ok"),
                step(2, Outcome::Failed, "fr is \"1.0\" & not 2.0"),
                step(3, Outcome::TimedOut, "hung"),
                step(4, Outcome::Error, "gone"),
                step(5, Outcome::Skipped, "after error"),
                step(6, Outcome::Cancelled, "cancelled at 40%"),
                step(7, Outcome::Invalid, "not an image for this drive"),
            ],
            console: vec![],
        };
        let x = document(&[(&r, "smoke@r1".into())]);
        assert!(
            x.contains(r#"tests="7" failures="1" errors="4" skipped="1""#),
            "{x}"
        );
        assert!(
            x.contains(r#"<failure message="fr is &quot;1.0&quot; &amp; not 2.0" type="failed"/>"#),
            "{x}"
        );
        assert!(x.contains(r#"<error message="hung" type="timeout"/>"#));
        assert!(x.contains(r#"<error message="gone" type="infrastructure"/>"#));
        assert!(x.contains(r#"<skipped message="after error"/>"#));
        assert!(x.contains(r#"<error message="cancelled at 40%" type="cancelled"/>"#));
        assert!(x.contains(r#"<error message="not an image for this drive" type="invalid"/>"#));
        let one = single_error(
            "run",
            "farmctl",
            "infrastructure",
            "cannot reach the controller",
        );
        assert!(
            one.contains(r#"errors="1""#) && one.contains(r#"type="infrastructure""#),
            "{one}"
        );
        assert!(x.contains("line &lt;1&gt;"));
        assert_eq!(escape("a\u{1}b"), "a?b");
    }
}
