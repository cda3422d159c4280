//! Sweeps for people: `/sweeps` (every sweep, newest first, by name, paged) and `/sweeps/<id>` (the rig × step
//! matrix against the previous sweep of its name: each cell's outcome and change — new failure, fixed, still
//! failing, flaky, regressed — linked to the job that ran it).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::page::{class, esc, page, pager, query, when, PAGE};
use crate::core::Farm;

#[derive(Debug, Default, Deserialize)]
pub(super) struct SweepsPage {
    name: Option<String>,
    #[serde(default)]
    page: usize,
}

pub(super) async fn sweeps(State(farm): State<Arc<Farm>>, Query(q): Query<SweepsPage>) -> Response {
    let name = q.name.clone().filter(|n| !n.is_empty());
    let all = farm.sweeps_named(name.as_deref()).await;
    let shown: Vec<_> = all.iter().skip(q.page * PAGE).take(PAGE).collect();
    let mut h = String::from("<h1>Sweeps</h1><form method=get action=/sweeps>");
    let _ = write!(
        h,
        "<label>name <input name=name value=\"{}\"></label> <button>filter</button></form>",
        esc(name.as_deref().unwrap_or(""))
    );
    if shown.is_empty() {
        h.push_str("<p>no sweeps</p>");
    } else {
        h.push_str("<table><tr><th>sweep</th><th>name</th><th>plan</th><th>started</th><th>rigs</th><th>skipped</th><th>state</th><th>compared with</th><th>by</th></tr>");
        for (s, done) in &shown {
            let _ = write!(
                h,
                "<tr><td><a href=\"/sweeps/{0}\">{0}</a></td><td><a href=\"/sweeps?name={1}\">{2}</a></td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td class={7}>{8}</td><td>{9}</td><td>{10}</td></tr>",
                esc(&s.id),
                super::page::urlencode(&s.name),
                esc(&s.name),
                esc(&s.plan_name),
                when(s.created_ms),
                s.job_ids.len(),
                s.skipped.len(),
                if *done { "ok" } else { "busy" },
                if *done { "done" } else { "running" },
                s.previous
                    .as_deref()
                    .map(|p| format!("<a href=\"/sweeps/{0}\">{0}</a>", esc(p)))
                    .unwrap_or_else(|| "-".into()),
                esc(&s.submitter),
            );
        }
        h.push_str("</table>");
    }
    pager(
        &mut h,
        &format!("/sweeps{}", query(&[("name", &name)])),
        q.page,
        shown.len(),
    );
    page("sweeps", &h).into_response()
}

pub(super) async fn sweep(State(farm): State<Arc<Farm>>, Path(id): Path<String>) -> Response {
    let r = match farm.sweep_report(&id, 25.0).await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::NOT_FOUND,
                page(
                    "no such sweep",
                    &format!("<h1>{}</h1>", esc(&e.to_string())),
                ),
            )
                .into_response()
        }
    };
    let s = &r.sweep;
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>Sweep {} <span class={}>{}</span></h1><p>{} · plan {} · started {} by {} · {}</p>",
        esc(&s.id),
        class(r.outcome.as_str()),
        r.outcome.as_str(),
        esc(&s.name),
        esc(&s.plan_name),
        when(s.created_ms),
        esc(&s.submitter),
        s.previous
            .as_deref()
            .map(|p| format!("compared with <a href=\"/sweeps/{0}\">{0}</a>", esc(p)))
            .unwrap_or_else(|| "the first of its name".into())
    );
    // The final attempt's job on each rig, for the links.
    let mut job_of: BTreeMap<&str, &nvfarm_model::farm::Job> = BTreeMap::new();
    for j in &r.jobs {
        if let Some(rig) = j.rig.as_deref().or(j.selector.rig.as_deref()) {
            if job_of.get(rig).is_none_or(|cur| cur.attempt <= j.attempt) {
                job_of.insert(rig, j);
            }
        }
    }
    h.push_str("<table id=matrix><tr><th>rig</th>");
    for st in &r.steps {
        let _ = write!(h, "<th>{}</th>", esc(st));
    }
    h.push_str("<th>job</th></tr>");
    for rig in &r.rigs {
        let _ = write!(h, "<tr><td><a href=\"/rigs/{0}\">{0}</a></td>", esc(rig));
        for st in &r.steps {
            match r.cells.iter().find(|c| &c.rig == rig && &c.step == st) {
                Some(c) => {
                    let outcome = c.outcome.map(|o| o.as_str()).unwrap_or("-");
                    let (cls, change) = match c.change {
                        Some(ch) => (
                            class(ch.as_str()),
                            format!("<br><b>{}</b>", ch.as_str().replace('_', " ")),
                        ),
                        None => (class(outcome), String::new()),
                    };
                    let _ = write!(
                        h,
                        "<td class={cls} title=\"{}\">{outcome}{change}</td>",
                        esc(&c.detail)
                    );
                }
                None => h.push_str("<td>-</td>"),
            }
        }
        match job_of.get(rig.as_str()) {
            Some(j) => {
                let _ = write!(
                    h,
                    "<td><a href=\"/jobs/{0}\">{0}</a> <span class={1}>{2}</span></td></tr>",
                    esc(&j.id),
                    class(j.state.as_str()),
                    j.state.as_str()
                );
            }
            None => h.push_str("<td>-</td></tr>"),
        }
    }
    h.push_str("</table>");
    if !s.skipped.is_empty() {
        h.push_str("<h2>Rigs not run</h2><table><tr><th>rig</th><th>why</th></tr>");
        for k in &s.skipped {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(&k.rig),
                esc(&k.reason)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Jobs</h2>");
    super::job_pages::jobs_table(&mut h, &r.jobs);
    let _ = write!(h, "<p><a href=\"/api/sweeps/{0}\">JSON</a></p>", esc(&s.id));
    page(&format!("sweep {}", s.id), &h).into_response()
}
