//! Placeholders: `{firmware.revision}`, `{firmware.sha256}`, `{firmware.file}`, `{rig.name}`, `{rig.label.KEY}`,
//! `{drive.serial}` and `{drive.model}`, filled in at run time from the build under test, the rig and the drive.
//! A regex quantifier such as `{3}` or `{2,5}` is not a placeholder.

use std::collections::BTreeMap;

/// The names a plan may use, for messages.
pub const KNOWN: &str = "firmware.revision, firmware.sha256, firmware.file, rig.name, rig.label.KEY, drive.serial, drive.model";

/// Whether `name` is a placeholder a plan may use.
fn known(name: &str) -> bool {
    matches!(
        name,
        "firmware.revision"
            | "firmware.sha256"
            | "firmware.file"
            | "rig.name"
            | "drive.serial"
            | "drive.model"
    ) || name
        .strip_prefix("rig.label.")
        .is_some_and(|k| !k.is_empty())
}

/// The `{name}` placeholders in `s`, or an error for an unknown or unclosed one.
pub fn placeholders(s: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(format!("unclosed '{{' in '{s}'"));
        };
        let name = &after[..j];
        if !name.chars().all(|c| c.is_ascii_digit() || c == ',') {
            if !known(name) {
                return Err(format!("unknown placeholder {{{name}}}; known: {KNOWN}"));
            }
            out.push(name.to_string());
        }
        rest = &after[j + 1..];
    }
    Ok(out)
}

/// Replaces placeholders with values from `vars`; an unset variable is an error naming it.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = s.to_string();
    for name in placeholders(s)? {
        let v = vars
            .get(&name)
            .ok_or_else(|| format!("{{{name}}} has no value in this run"))?;
        out = out.replace(&format!("{{{name}}}"), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_substitution() {
        assert_eq!(
            placeholders("a {rig.name} b {rig.label.site} c{2,3}").unwrap(),
            vec!["rig.name", "rig.label.site"]
        );
        let vars: BTreeMap<String, String> = [("rig.name".to_string(), "r1".to_string())].into();
        assert_eq!(substitute("rig={rig.name}", &vars).unwrap(), "rig=r1");
        assert!(substitute("{drive.serial}", &vars)
            .unwrap_err()
            .contains("{drive.serial} has no value"));
        assert!(placeholders("{oops").is_err());
        assert!(placeholders("{firmware.version}")
            .unwrap_err()
            .contains("unknown placeholder {firmware.version}"));
    }
}
