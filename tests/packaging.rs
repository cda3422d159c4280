//! The packaging agrees with the binaries: every systemd unit and container image starts a binary the matching
//! .deb installs (or the image holds), with options that binary accepts, and the config files they name are the
//! ones the packages ship. `scripts/package.sh` builds the packages and images themselves.

use std::process::Command;

use nvfarm_tests::{bin, workspace};

/// `bin --help`, the option names it documents.
fn accepts(binary: &str, option: &str) -> bool {
    let o = Command::new(bin(binary)).arg("--help").output().unwrap();
    String::from_utf8_lossy(&o.stdout).contains(option)
}

/// The `[package.metadata.deb]` of a crate's Cargo.toml.
fn deb(manifest: &str) -> toml::Table {
    let t: toml::Table =
        toml::from_str(&std::fs::read_to_string(workspace().join(manifest)).unwrap()).unwrap();
    t["package"]["metadata"]["deb"].as_table().unwrap().clone()
}

/// The installed paths of a deb's assets.
fn installs(d: &toml::Table) -> Vec<String> {
    d["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = a.as_array().unwrap();
            let (src, dst) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
            let file = src.rsplit('/').next().unwrap();
            format!(
                "/{}",
                if dst.ends_with('/') {
                    format!("{dst}{file}")
                } else {
                    dst.to_string()
                }
            )
        })
        .collect()
}

#[test]
fn units_and_images_start_what_the_packages_install_with_options_it_accepts() {
    for (manifest, unit, binary) in [
        (
            "farm-controller/cli/Cargo.toml",
            "farm-controller",
            "farm-controller",
        ),
        ("bench-agent/cli/Cargo.toml", "bench-agent", "bench-agent"),
    ] {
        let d = deb(manifest);
        let files = installs(&d);
        assert_eq!(
            d["systemd-units"]["unit-name"].as_str(),
            Some(unit),
            "{manifest}"
        );
        let text =
            std::fs::read_to_string(workspace().join(format!("packaging/systemd/{unit}.service")))
                .unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let mut words = exec.split_whitespace();
        let path = words.next().unwrap();
        assert_eq!(path, format!("/usr/bin/{binary}"), "{unit}.service");
        assert!(
            files.contains(&path.to_string()),
            "{manifest} does not install {path}: {files:?}"
        );
        let args: Vec<&str> = words.collect();
        for w in &args {
            if w.starts_with("--") {
                assert!(
                    accepts(binary, w),
                    "{unit}.service passes {w}, which {binary} --help does not list"
                );
            } else if w.starts_with("/etc/") {
                assert!(
                    files.contains(&w.to_string()),
                    "{unit}.service reads {w}, which {manifest} does not ship"
                );
            }
        }
        for f in text
            .lines()
            .filter_map(|l| l.strip_prefix("EnvironmentFile="))
        {
            assert!(
                files.contains(&f.to_string()),
                "{unit}.service reads {f}, which {manifest} does not ship"
            );
        }
        for conf in d["conf-files"]
            .as_array()
            .map(|a| a.to_vec())
            .unwrap_or_default()
        {
            assert!(
                files.contains(&conf.as_str().unwrap().to_string()),
                "{manifest}: conf-file {conf} is not an asset"
            );
        }
    }
    let farmctl = installs(&deb("farmctl/Cargo.toml"));
    assert_eq!(farmctl, vec!["/usr/bin/farmctl".to_string()]);

    for (file, binary) in [
        (
            "packaging/containers/farm-controller.Containerfile",
            "farm-controller",
        ),
        (
            "packaging/containers/bench-agent.Containerfile",
            "bench-agent",
        ),
    ] {
        let text = std::fs::read_to_string(workspace().join(file)).unwrap();
        let entry = text
            .lines()
            .find_map(|l| l.strip_prefix("ENTRYPOINT "))
            .unwrap();
        let argv: Vec<String> = serde_json::from_str(entry).unwrap();
        assert_eq!(argv[0], format!("/usr/bin/{binary}"), "{file}");
        for w in argv.iter().filter(|w| w.starts_with("--")) {
            assert!(
                accepts(binary, w),
                "{file} passes {w}, which {binary} --help does not list"
            );
        }
        assert!(
            text.contains("FROM scratch") && text.contains("COPY rootfs/ /"),
            "{file}"
        );
        let volume = text
            .lines()
            .find_map(|l| l.strip_prefix("VOLUME "))
            .unwrap();
        let dirs: Vec<String> = serde_json::from_str(volume).unwrap();
        assert!(
            argv.iter().any(|a| dirs.contains(a)),
            "{file}: the data volume is not where the binary keeps its data"
        );
    }
    // The example config the controller package ships is one the controller accepts.
    let cfg = workspace().join("packaging/deb/controller.toml");
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(bin("farm-controller"))
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--check-config",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
