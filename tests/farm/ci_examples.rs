//! The CI examples in `examples/ci/`, against a simulated farm: the GitLab job run by gitlab-ci-local (shell
//! executor) passes a good build, fails a broken one, and lets an infrastructure error through as an allowed
//! failure, with the JUnit report as its artifact each time; the Jenkinsfile runs the same
//! farmctl command and maps the same exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nvfarm_tests::lab::{Lab, Out};
use nvfarm_tests::{bin, workspace};

const JOB: &str = "flash and test on hardware";

fn gitlab_ci_local() -> PathBuf {
    let cache = std::env::var_os("NVFARM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/nvfarm"));
    let p = cache.join("npm/node_modules/.bin/gitlab-ci-local");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs gitlab-ci-local)",
        p.display()
    );
    p
}

/// A git project holding the example pipeline, as a firmware repository would.
fn project(lab: &Lab) -> PathBuf {
    let dir = lab.path("fw-repo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        workspace().join("examples/ci/.gitlab-ci.yml"),
        dir.join(".gitlab-ci.yml"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.email=ci@example", "-c", "user.name=ci"])
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://gitlab.example/fw/drive.git",
    ]);
    git(&["add", "."]);
    git(&["commit", "-qm", "pipeline"]);
    dir
}

/// Runs the job with these variables; its console output and how gitlab-ci-local summed it up.
fn run_job(lab: &Lab, dir: &Path, firmware: &str, labels: &str) -> (String, String) {
    let _ = std::fs::remove_file(dir.join("farm-junit.xml"));
    let path = format!(
        "{}:{}",
        bin("farmctl").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(gitlab_ci_local());
    c.current_dir(dir)
        .env("PATH", path)
        .env_remove("FARM_TOKEN")
        .args(["--variable", &format!("FARM_CONTROLLER={}", lab.url())])
        .args(["--variable", &format!("FIRMWARE={firmware}")])
        .args([
            "--variable",
            &format!("PLAN={}", lab.path("quick.toml").display()),
        ])
        .args(["--variable", &format!("RIG_LABELS={labels}")])
        .arg(JOB);
    let o = Out::of(c);
    let all = o.all();
    // gitlab-ci-local's closing summary: " PASS  <job>", " FAIL  <job>" or " WARN  <job>" (an allowed failure).
    let summary = all
        .lines()
        .map(str::trim)
        .find(|l| ["PASS ", "FAIL ", "WARN "].iter().any(|w| l.starts_with(w)) && l.contains(JOB))
        .unwrap_or_else(|| panic!("no summary line for the job:\n{all}"))
        .to_string();
    (all, summary)
}

fn junit(dir: &Path) -> String {
    let artifact = dir
        .join(".gitlab-ci-local/artifacts")
        .read_dir()
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("farm-junit.xml"))
        .find(|p| p.exists());
    let p =
        artifact.unwrap_or_else(|| panic!("no farm-junit.xml artifact under {}", dir.display()));
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn the_gitlab_job_passes_a_good_build_fails_a_broken_one_and_allows_an_infrastructure_error() {
    let lab = crate::lab_with_agent(2);
    let dir = project(&lab);
    let good = lab.image("2.0.0", "ok");
    let bad = lab.image("2.1.0", "boot-fail");

    let (all, summary) = run_job(&lab, &dir, &good, "model=X1");
    assert!(summary.starts_with("PASS"), "{summary}\n{all}");
    let x = junit(&dir);
    assert!(x.contains(r#"failures="0" errors="0""#), "{x}");

    let (all, summary) = run_job(&lab, &dir, &bad, "model=X1");
    assert!(
        summary.starts_with("FAIL"),
        "a broken build is red: {summary}\n{all}"
    );
    assert!(all.contains("FAIL 1"), "exit 1, a test failure: {all}");
    let x = junit(&dir);
    assert!(x.contains("<failure"), "{x}");

    // Every X1 rig out of service: farmctl exits 3, an allowed failure (GitLab also retries it twice first:
    // `retry: exit_codes`, which gitlab-ci-local validates against GitLab's schema but does not carry out).
    for r in ["bench-r1", "bench-r2"] {
        let o = lab.farmctl(&["rig", "maintenance", r, "--reason", "cabling"]);
        assert_eq!(o.code, 0, "{}", o.all());
    }
    lab.wait("both rigs in maintenance", Duration::from_secs(10), || {
        lab.rigs_json().iter().all(|r| r["state"] == "maintenance")
    });
    let (all, summary) = run_job(&lab, &dir, &good, "model=X1");
    assert!(
        summary.starts_with("WARN"),
        "an infrastructure error is an allowed failure, not red: {summary}\n{all}"
    );
    assert!(all.contains("WARN 3"), "exit 3: {all}");
    let x = junit(&dir);
    assert!(
        x.contains("<error ")
            && x.contains(r#"type="infrastructure""#)
            && x.contains("maintenance"),
        "{x}"
    );
}

/// No Jenkins here: the Jenkinsfile is checked for shape (balanced braces and quotes, the declarative sections)
/// and for running exactly the GitLab job's farmctl command and handling each exit code farmctl documents.
#[test]
fn the_jenkinsfile_runs_the_same_farmctl_command_and_maps_every_exit_code() {
    let jf = std::fs::read_to_string(workspace().join("examples/ci/Jenkinsfile")).unwrap();
    let gl = std::fs::read_to_string(workspace().join("examples/ci/.gitlab-ci.yml")).unwrap();
    let code: String = jf
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut depth = 0i32;
    for c in code.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        assert!(depth >= 0, "a '}}' closes nothing");
    }
    assert_eq!(depth, 0, "unbalanced braces");
    assert_eq!(code.matches("'''").count() % 2, 0, "unbalanced ''' strings");
    for section in [
        "pipeline {",
        "agent any",
        "environment {",
        "stages {",
        "stage('flash and test on hardware')",
        "post {",
        "junit ",
        "archiveArtifacts",
    ] {
        assert!(code.contains(section), "the Jenkinsfile has no {section}");
    }
    let farmctl = |text: &str| -> String {
        text.lines()
            .map(str::trim)
            .find_map(|l| {
                l.strip_prefix("- ")
                    .unwrap_or(l)
                    .strip_prefix("farmctl run ")
                    .map(|r| format!("farmctl run {r}"))
            })
            .unwrap_or_else(|| panic!("no farmctl run line in:\n{text}"))
    };
    assert_eq!(
        farmctl(&code),
        farmctl(&gl),
        "the Jenkinsfile and the GitLab job run different commands"
    );
    for rc in ["rc == 1", "rc == 2", "rc == 3", "rc == 4", "rc != 0"] {
        assert!(code.contains(rc), "the Jenkinsfile does not handle {rc}");
    }
    assert!(
        code.contains("unstable("),
        "exit 3 marks the build unstable, not failed"
    );
    // farmctl documents the same codes the examples map.
    let help = Out::of({
        let mut c = Command::new(bin("farmctl"));
        c.arg("--help");
        c
    });
    let words = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "0 passed",
        "1 a test failed",
        "2 bad input",
        "3 infrastructure error",
        "4 timed out",
    ] {
        assert!(
            words.contains(text),
            "farmctl --help does not say '{text}':\n{}",
            help.stdout
        );
    }
}
