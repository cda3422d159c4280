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

/// The known `{name}` placeholders in free text (a shell command), ignoring every other brace.
pub fn known_in(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        match after.find(['}', '{']) {
            Some(j) if after.as_bytes()[j] == b'}' => {
                if known(&after[..j]) {
                    out.push(after[..j].to_string());
                }
                rest = &after[j + 1..];
            }
            Some(j) => rest = &after[j..],
            None => break,
        }
    }
    out
}

/// The environment variable a script reads a placeholder's value from: `{firmware.revision}` is
/// `NVFARM_FIRMWARE_REV`, `{rig.label.site}` is `NVFARM_RIG_LABEL_SITE`.
pub fn env_name(placeholder: &str) -> String {
    match placeholder {
        "firmware.revision" => "NVFARM_FIRMWARE_REV".into(),
        "rig.name" => "NVFARM_RIG".into(),
        other => format!(
            "NVFARM_{}",
            other
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                })
                .collect::<String>()
        ),
    }
}

/// Replaces placeholders with values from `vars`; an unset variable is an error naming it.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    substitute_with(s, vars, |v| v.to_string())
}

/// Replaces placeholders with values from `vars`, each passed through `quote` first (a regex fills them in
/// escaped, so a model name with `+` or `(` matches itself).
pub fn substitute_with(
    s: &str,
    vars: &BTreeMap<String, String>,
    quote: impl Fn(&str) -> String,
) -> Result<String, String> {
    let mut out = s.to_string();
    for name in placeholders(s)? {
        let v = vars
            .get(&name)
            .ok_or_else(|| format!("{{{name}}} has no value in this run"))?;
        out = out.replace(&format!("{{{name}}}"), &quote(v));
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

    #[test]
    fn shell_text_is_searched_only_for_known_placeholders() {
        assert_eq!(
            known_in("awk '{print $1}' ${HOME} {firmware.revision} {a,b} {rig.label.site}"),
            vec!["firmware.revision", "rig.label.site"]
        );
        assert!(known_in("echo {").is_empty());
        assert_eq!(env_name("firmware.revision"), "NVFARM_FIRMWARE_REV");
        assert_eq!(env_name("drive.model"), "NVFARM_DRIVE_MODEL");
        assert_eq!(env_name("rig.label.site"), "NVFARM_RIG_LABEL_SITE");
        assert_eq!(env_name("rig.name"), "NVFARM_RIG");
    }

    #[test]
    fn a_quoted_substitution_quotes_only_the_values() {
        let vars: BTreeMap<String, String> =
            [("drive.model".to_string(), "X1+ (B)".to_string())].into();
        let out =
            substitute_with("^model {drive.model}$", &vars, |v| v.replace('+', "\\+")).unwrap();
        assert_eq!(out, "^model X1\\+ (B)$");
    }
}
