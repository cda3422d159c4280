//! What every dashboard page shares: the layout (title, navigation, style), escaping, the CSS class of an
//! outcome, times and durations as people read them, and paging links.

use std::fmt::Write;

use axum::response::Html;

pub(super) use nvfarm_model::junit::escape as esc;
pub(super) use nvfarm_model::time::rfc3339 as when;

/// Jobs per page on lists.
pub(super) const PAGE: usize = 50;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin-bottom:1.5em}\
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:90%}th{background:#f3f3f3}\
.ok{background:#d9f2d9}.bad{background:#f8d0d0}.infra{background:#ffe0b3}.timeout{background:#f2e6ff}.invalid{background:#fff3b0}.muted{color:#777}.busy{background:#dde8f7}\
.new_failure{background:#f8d0d0;font-weight:bold}.fixed{background:#d9f2d9;font-weight:bold}.still_failing{background:#f8d0d0}.flaky{background:#fff3b0}.regressed{background:#ffe0b3;font-weight:bold}\
nav a{margin-right:1em}form{margin:.5em 0 1em}pre{background:#f7f7f7;padding:.6em;font-size:85%;overflow-x:auto;max-height:40em}\
.chart{margin:.5em 0 1.5em}";

/// A whole page: `<title>`, the navigation bar, `body`.
pub(super) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{} · nvfarm</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">farm</a><a href=\"/sweeps\">sweeps</a><a href=\"/jobs\">jobs</a></nav>{body}</body></html>",
        esc(title)
    ))
}

/// The CSS class for a state, outcome or change name.
pub(super) fn class(s: &str) -> &'static str {
    match s {
        "passed" | "idle" => "ok",
        "failed" | "quarantined" => "bad",
        "error" | "offline" => "infra",
        "timed_out" => "timeout",
        "cancelled" | "maintenance" | "skipped" => "muted",
        "invalid" => "invalid",
        "new_failure" => "new_failure",
        "fixed" => "fixed",
        "still_failing" => "still_failing",
        "flaky" => "flaky",
        "regressed" => "regressed",
        _ => "busy",
    }
}

/// The time from `from` to `to` (Unix ms), `-` if either is unset.
pub(super) fn took(from: u64, to: u64) -> String {
    if from == 0 || to < from {
        return "-".into();
    }
    let s = (to - from) / 1000;
    match s {
        0..60 => format!("{:.1}s", (to - from) as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// "newer" / "older" links for page `page` of a list at `base` (which carries its filters as a query).
pub(super) fn pager(h: &mut String, base: &str, page: usize, shown: usize) {
    let sep = if base.contains('?') { "&amp;" } else { "?" };
    h.push_str("<p>");
    if page > 0 {
        let _ = write!(
            h,
            "<a href=\"{}{sep}page={}\">newer</a> ",
            esc(base),
            page - 1
        );
    }
    if shown == PAGE {
        let _ = write!(
            h,
            "<a href=\"{}{sep}page={}\">older</a>",
            esc(base),
            page + 1
        );
    }
    h.push_str("</p>");
}

/// `?k=v&...` of the filters that are set.
pub(super) fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", urlencode(v)))
        })
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

/// Percent-encodes a query value.
pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them_and_queries_keep_only_what_is_set() {
        assert_eq!(took(1_000, 3_500), "2.5s");
        assert_eq!(took(0, 3_500), "-");
        assert_eq!(took(0, 0), "-");
        assert_eq!(took(1_000, 126_000), "2m05s");
        assert_eq!(took(1, 7_201_001), "2h00m");
        assert_eq!(
            query(&[
                ("rig", &Some("r 1".into())),
                ("state", &None),
                ("plan", &Some(String::new()))
            ]),
            "?rig=r%201"
        );
        let mut h = String::new();
        pager(&mut h, "/jobs?rig=a", 1, PAGE);
        assert!(
            h.contains("/jobs?rig=a&amp;page=0") && h.contains("page=2"),
            "{h}"
        );
    }
}
