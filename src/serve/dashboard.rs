//! The agent's dashboard: server-rendered HTML, no script (the list page
//! refreshes itself with a meta tag), the same strict CSP as the report, and
//! every outside string escaped. `GET /` lists releases and pending
//! approvals; `GET /releases/NAME` shows one with its scorecard and the
//! report's charts (the judge's window shaded).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiState;
use crate::policy::{Decision, Proposal};
use crate::report::html::{CSP, charts, escape, page, scorecard};
use crate::run::agent::ReleaseView;

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, CSP)], body)
        .into_response()
}

fn proposal(p: &Proposal) -> String {
    match p {
        Proposal::Promote => "promote".into(),
        Proposal::Rollback { plan } => {
            format!("roll back {} from {} to {}", plan.target, plan.from_revision, plan.to_revision)
        }
    }
}

fn decision(d: Option<&Decision>) -> &'static str {
    d.map_or("–", Decision::label)
}

fn expires(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()
}

/// The executor's exact steps, as an approval would run them.
fn steps_list(steps: &[String]) -> String {
    if steps.is_empty() {
        return String::new();
    }
    let items: String = steps.iter().map(|s| format!("<li><code>{}</code></li>", escape(s))).collect();
    format!("Approving runs:<ol class=\"steps\">{items}</ol>")
}

fn pending_block(v: &ReleaseView) -> String {
    let Some(a) = &v.pending_approval else { return String::new() };
    format!(
        "<div class=\"pending\"><strong>Approval {id}</strong> for <a href=\"/releases/{name}\">{name_t}</a>: {what}.<br>\
         Why: {why}<br>{steps}Expires {exp}. Approve with <code>backstop approve {id} --agent URL --reason TEXT</code> \
         or reject with <code>backstop reject {id} …</code>.</div>\n",
        id = escape(&a.request.id),
        name = escape(&v.name),
        name_t = escape(&v.name),
        what = escape(&proposal(&a.request.proposed)),
        why = escape(&a.reason),
        steps = steps_list(&a.steps),
        exp = escape(&expires(a.request.expires_at_ms)),
    )
}

fn row(v: &ReleaseView) -> String {
    let failing = if v.failing.is_empty() { "–".to_string() } else { v.failing.join(", ") };
    let status = v.status.as_ref().map_or(String::new(), |s| format!(" ({})", s.label()));
    format!(
        "<tr><td><a href=\"/releases/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}{}</td><td>{} / {} s</td><td>{}</td><td>{}</td></tr>\n",
        escape(&v.name),
        escape(&v.name),
        escape(&v.service),
        escape(&v.candidate_revision),
        escape(v.state.label()),
        escape(&status),
        v.now_s,
        v.duration_s,
        escape(decision(v.decision.as_ref())),
        escape(&failing),
    )
}

async fn index(State(s): State<ApiState>) -> Response {
    let views = s.agent.list();
    let pending: String = views.iter().map(pending_block).collect();
    let rows: String = views.iter().map(row).collect();
    let body = format!(
        "<h1>backstop agent</h1>\n<p>{n} release(s); {p} approval(s) pending. This page refreshes every 5 s.</p>\n\
         {pending}<div class=\"table-wrap\"><table>\n<thead><tr><th>release</th><th>service</th><th>revision</th>\
         <th>state</th><th>time in window</th><th>decision</th><th>failing</th></tr></thead>\n<tbody>\n{rows}</tbody></table></div>\n\
         <p><a href=\"/metrics\">metrics</a> · <a href=\"/v1/releases\">JSON</a></p>\n",
        n = views.len(),
        p = views.iter().filter(|v| v.pending_approval.is_some()).count(),
    );
    let page =
        page("backstop agent", &body).replacen("<head>\n", "<head>\n<meta http-equiv=\"refresh\" content=\"5\">\n", 1);
    html(StatusCode::OK, page)
}

async fn release(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let Some(v) = s.agent.get(&name) else {
        return html(StatusCode::NOT_FOUND, page("not found", &format!("<p>No release named {}.</p>", escape(&name))));
    };
    let mut body = format!(
        "<p><a href=\"/\">← all releases</a></p>\n<h1>{} {}</h1>\n<p>Service {} on target <code>{}</code>; state <strong>{}</strong>; \
         t={} of {} s; decision {}; ledger seq {}; registered by {}.</p>\n",
        escape(&v.name),
        escape(&v.candidate_revision),
        escape(&v.service),
        escape(&v.target),
        escape(v.state.label()),
        v.now_s,
        v.duration_s,
        escape(decision(v.decision.as_ref())),
        v.ledger_seq,
        escape(&v.registered_by),
    );
    body.push_str(&pending_block(&v));
    if let Some(status) = &v.status {
        body.push_str(&format!("<p>Ended: <strong>{}</strong>.</p>\n", escape(status.label())));
    }
    if let Some(e) = &v.error {
        body.push_str(&format!("<p>Could not run: {}</p>\n", escape(e)));
    }
    if let Some(d) = &v.decision {
        let why = match d {
            Decision::Hold { reason } | Decision::Deny { reason } | Decision::RequireApproval { reason, .. } => {
                reason.as_str()
            }
            Decision::Rollback { plan } => plan.reason.as_str(),
            Decision::Promote | Decision::Continue => "",
        };
        if !why.is_empty() {
            body.push_str(&format!("<p>Why: {}</p>\n", escape(why)));
        }
    }
    if let Some(j) = &v.judge {
        body.push_str(&format!(
            "<h2>Scorecard</h2>\n<p>{}</p>\n<div class=\"table-wrap\">{}</div>\n",
            escape(&j.summary),
            scorecard(j)
        ));
    }
    if let Some(obs) = &v.observation {
        body.push_str(&charts(obs, v.judge.as_ref(), v.duration_s, v.now_s, None));
    }
    html(StatusCode::OK, page(&format!("backstop: {}", v.name), &body))
}

/// The dashboard's routes.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/", get(index)).route("/releases/{name}", get(release))
}
