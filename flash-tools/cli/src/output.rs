//! Rendering results: JSON on stdout for machines, aligned `key : value` lines for people.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// `println!` that ignores a closed stdout (`nvme-flash ... | head`).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Writes one line to stdout; a closed pipe (`| head`) is not an error worth a panic.
pub fn line(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) {
    line(serde_json::to_string_pretty(value).expect("serializable"));
}

/// Prints a struct as `key : value` lines (nested objects flattened with dots, arrays indexed).
pub fn table<T: Serialize>(value: &T) {
    let v = serde_json::to_value(value).expect("serializable");
    let mut rows = vec![];
    flatten("", &v, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        line(format!("{k:<width$} : {v}"));
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&key(k), v, out);
            }
        }
        Value::Array(a) if a.is_empty() => out.push((prefix.to_string(), "(none)".into())),
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => out.push((prefix.to_string(), "-".into())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}
