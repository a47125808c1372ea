//! The agent's dashboard: server-rendered HTML, no script (the list page
//! refreshes itself with a meta tag), the same strict CSP as the report, and
//! every outside string escaped. `GET /` lists releases and pending
//! approvals; `GET /releases/NAME` shows one with its scorecard and the
//! report's charts (the judge's window shaded).
//!
//! People act from it with plain HTML forms — hold, resume, abort, roll
//! back, promote (`POST /ui/releases/NAME`), approve or reject
//! (`POST /ui/approvals/ID`) and clear a quarantined revision (`GET
//! /revisions`, `POST /ui/revisions/SERVICE/REVISION`) — under the API's
//! scopes (a form is shown only to a caller who has the scope) and the
//! same agent calls, so policy rules and the ledger records exactly as for
//! the API. Each form carries a CSRF
//! token signed for the identity the page was rendered for
//! ([`super::signing`]); a form without a valid one is refused, and the
//! browser guard still refuses cross-site posts.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;

use super::ApiState;
use super::api::{Done, act, answer_request};
use super::auth::{Caller, Channel, Scope};
use crate::ledger::{Record, StoredRecord};
use crate::policy::{Decision, Proposal};
use crate::report::html::{CSP, charts, escape, log_templates, page, scorecard};
use crate::run::agent::{ReleaseState, ReleaseView};

/// The report's policy, plus: forms post only to the agent, and no other
/// page may frame the dashboard (its buttons cannot be clicked through a
/// disguise).
fn dashboard_csp() -> String {
    format!("{CSP}; form-action 'self'; frame-ancestors 'none'")
}

fn html(status: StatusCode, body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
        (header::CONTENT_SECURITY_POLICY, dashboard_csp()),
        (header::X_FRAME_OPTIONS, "DENY".to_string()),
    ];
    (status, headers, body).into_response()
}

fn proposal(p: &Proposal) -> String {
    match p {
        Proposal::Promote => "promote".into(),
        Proposal::Rollback { plan } => {
            format!("roll back {} from {} to {}", plan.target, plan.from_revision, plan.to_revision)
        }
    }
}

/// The last tick's decision in words that agree with the state: an operator
/// hold stops every action, so a rollback or promotion policy decided while
/// held is shown as not run.
fn decision(state: ReleaseState, d: Option<&Decision>) -> String {
    match (state, d) {
        (_, None) => "–".into(),
        (ReleaseState::Held, Some(d @ (Decision::Rollback { .. } | Decision::Promote))) => {
            format!("{} (held: not run)", d.label())
        }
        (_, Some(d)) => d.label().into(),
    }
}

fn utc_time(ms: i64) -> String {
    crate::clock::utc_text(ms)
}

/// The executor's exact steps, as an approval would run them.
fn steps_list(steps: &[String]) -> String {
    if steps.is_empty() {
        return String::new();
    }
    let items: String = steps.iter().map(|s| format!("<li><code>{}</code></li>", escape(s))).collect();
    format!("Approving runs:<ol class=\"steps\">{items}</ol>")
}

/// What the person looking may do from the page, and the token their forms carry.
pub(super) struct Forms {
    token: String,
    operate: bool,
    approve: bool,
}

impl Forms {
    fn for_caller(s: &ApiState, caller: &Caller) -> Forms {
        let now = s.agent.runtime().agent.clock.now_ms();
        Forms {
            token: s.signer.form_token(&caller.identity, now),
            operate: caller.may(Scope::Operate),
            approve: caller.may(Scope::Approve),
        }
    }

    fn form(&self, action: &str, reason_hint: &str, buttons: &[(&str, &str)]) -> String {
        let buttons: String = buttons
            .iter()
            .map(|(value, label)| format!("<button type=\"submit\" name=\"do\" value=\"{value}\">{label}</button> "))
            .collect();
        format!(
            "<form method=\"post\" action=\"{action}\" class=\"act\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label>Reason <input type=\"text\" name=\"reason\" maxlength=\"500\" size=\"40\" placeholder=\"{reason_hint}\"></label> {buttons}</form>\n",
            escape(&self.token)
        )
    }
}

fn pending_block(v: &ReleaseView, forms: Option<&Forms>) -> String {
    let Some(a) = &v.pending_approval else { return String::new() };
    let answer = match forms.filter(|f| f.approve) {
        Some(f) => f.form(
            &format!("/ui/approvals/{}", escape(&crate::field::url_segment(&a.request.id))),
            "why (recorded in the ledger)",
            &[("approve", "Approve"), ("reject", "Reject")],
        ),
        // The list page refreshes itself, which would wipe a reason being typed: its answers are a link away.
        None => format!(
            "Answer on <a href=\"/releases/{name}\">the release page</a>, or with \
             <code>backstop approve {id} --reason TEXT</code> / <code>backstop reject {id} --reason TEXT</code>.",
            name = escape(&crate::field::url_segment(&v.name)),
            id = escape(&a.request.id)
        ),
    };
    format!(
        "<div class=\"pending\"><strong>Approval {id}</strong> for <a href=\"/releases/{name}\">{name_t}</a>: {what}.<br>\
         Why: {why}<br>{steps}Expires {exp}.<br>{answer}</div>\n",
        id = escape(&a.request.id),
        name = escape(&crate::field::url_segment(&v.name)),
        name_t = escape(&v.name),
        what = escape(&proposal(&a.request.proposed)),
        why = escape(&a.reason),
        steps = steps_list(&a.steps),
        exp = escape(&utc_time(a.request.expires_at_ms)),
    )
}

/// A release's operator buttons: what its state allows, for a caller who may operate.
fn actions_block(v: &ReleaseView, forms: Option<&Forms>) -> String {
    let Some(f) = forms.filter(|f| f.operate) else { return String::new() };
    let mut buttons = match v.state {
        ReleaseState::Finished | ReleaseState::Failed => return String::new(),
        ReleaseState::Held => vec![("resume", "Resume")],
        _ => vec![("hold", "Hold")],
    };
    buttons.extend([("abort", "Abort"), ("rollback", "Roll back now"), ("promote", "Promote now")]);
    let form = f.form(
        &format!("/ui/releases/{}", escape(&crate::field::url_segment(&v.name))),
        "why (needed to roll back or promote)",
        &buttons,
    );
    format!(
        "<h2>Act</h2>\n<p>Policy rules a rollback or a promotion as for the API; the ledger records your name and reason.</p>\n{form}"
    )
}

/// Which agent holds the release, as this one last saw it.
fn held_by(v: &ReleaseView) -> String {
    v.holder.as_ref().map_or(String::new(), |h| format!(" · held by {h}"))
}

fn row(v: &ReleaseView) -> String {
    let failing = if v.failing.is_empty() { "–".to_string() } else { v.failing.join(", ") };
    let status = v.status.as_ref().map_or(String::new(), |s| format!(" ({})", s.label())) + &held_by(v);
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
        escape(&decision(v.state, v.decision.as_ref())),
        escape(&failing),
    )
}

/// Each configured fleet as one release: where it stands, and its members wave by wave.
fn fleets_block(fleets: &[crate::run::fleet::FleetSummary]) -> String {
    let one = |f: &crate::run::fleet::FleetSummary| {
        let wave = f.wave.map(|w| format!(" at wave {w}")).unwrap_or_default();
        let why = f.why.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
        let rows: String = f
            .members
            .iter()
            .map(|m| {
                let revert = if m.revert == "not_started" { "–" } else { m.revert };
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    m.wave,
                    escape(&m.name),
                    escape(&m.target),
                    escape(m.status),
                    escape(revert)
                )
            })
            .collect();
        format!(
            "<h3>{} — {}{wave}{}</h3>\n<div class=\"table-wrap\"><table>\n<thead><tr><th>wave</th><th>release</th>\
             <th>target</th><th>status</th><th>revert</th></tr></thead>\n<tbody>\n{rows}</tbody></table></div>\n",
            escape(&f.name),
            f.outcome.label(),
            escape(&why),
        )
    };
    match fleets {
        [] => String::new(),
        _ => format!("<h2>Fleets</h2>\n{}", fleets.iter().map(one).collect::<String>()),
    }
}

async fn index(State(s): State<ApiState>) -> Response {
    let views = s.agent.list();
    // A ledger that cannot be read shows no fleets here; /v1/fleets says why.
    let fleets = fleets_block(&s.agent.runtime().fleet_summaries().await.unwrap_or_default());
    let pending: String = views.iter().map(|v| pending_block(v, None)).collect();
    let rows: String = views.iter().map(row).collect();
    let body = format!(
        "<h1>backstop agent</h1>\n<p>{n} release(s); {p} approval(s) pending. This page refreshes every 5 s.</p>\n\
         {pending}<div class=\"table-wrap\"><table>\n<thead><tr><th>release</th><th>service</th><th>revision</th>\
         <th>state</th><th>time in window</th><th>decision</th><th>failing</th></tr></thead>\n<tbody>\n{rows}</tbody></table></div>\n\
         {fleets}<p><a href=\"/revisions\">revisions</a> · <a href=\"/metrics\">metrics</a> · <a href=\"/v1/releases\">JSON</a></p>\n",
        n = views.len(),
        p = views.iter().filter(|v| v.pending_approval.is_some()).count(),
    );
    let page =
        page("backstop agent", &body).replacen("<head>\n", "<head>\n<meta http-equiv=\"refresh\" content=\"5\">\n", 1);
    html(StatusCode::OK, page)
}

async fn release(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    let Some(v) = s.agent.get(&name) else {
        // Not run here now: its report from the ledger, if it ran anywhere.
        return report_page(State(s), Path(name)).await;
    };
    let people = people_of(&s, &v).await;
    html(StatusCode::OK, release_page(&v, Some(&Forms::for_caller(&s, &caller)), &people))
}

/// The people section of `v`'s page, from its ledger records (a note when the ledger does not answer).
async fn people_of(s: &ApiState, v: &ReleaseView) -> String {
    match s.agent.runtime().ledger.people_records(&v.release_id).await {
        Ok(records) => people_table(&records),
        Err(e) => format!(
            "<p class=\"note\">Who answered what: the ledger did not answer ({}).</p>\n",
            escape(&crate::error::chain(&e))
        ),
    }
}

/// Who did what to the release and when, with their reason, as the ledger
/// recorded it: registrations, holds, resumes and aborts, approval requests,
/// answers and rulings. Empty when nobody did anything.
fn people_table(records: &[(StoredRecord, Record)]) -> String {
    let rows: String = records
        .iter()
        .filter_map(|(stored, record)| {
            let (what, reason) = match record {
                Record::Operator(o) => (o.action.to_string(), o.reason.as_str()),
                Record::ApprovalRequested(a) => {
                    (format!("asked {} to {}", a.request.id, proposal(&a.request.proposed)), a.reason.as_str())
                }
                Record::ApprovalAnswer(a) => (format!("answered {} {}", a.id, a.answer), a.reason.as_str()),
                Record::PersonRequest(p) => (format!("asked {} ({}), relayed", p.action, p.id), p.reason.as_str()),
                Record::ApprovalResolved(r) => (format!("{}: {}", r.id, r.ruling.describe()), r.reason.as_str()),
                _ => return None,
            };
            Some(format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&utc_time(stored.at_ms)),
                escape(&stored.actor),
                escape(&what),
                escape(reason)
            ))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<h2>People</h2>\n<div class=\"table-wrap\"><table>\n<thead><tr><th>when</th><th>who</th><th>what</th>\
         <th>reason</th></tr></thead>\n<tbody>\n{rows}</tbody></table></div>\n"
    )
}

/// One release's page; `forms`: the buttons of the person looking (none on a shared link).
pub(super) fn release_page(v: &ReleaseView, forms: Option<&Forms>, people: &str) -> String {
    let mut body = format!(
        "<p><a href=\"/\">← all releases</a></p>\n<h1>{} {}</h1>\n<p>Service {} on target <code>{}</code>; state <strong>{}</strong>{}; \
         t={} of {} s; decision {}; ledger seq {}; registered by {}.</p>\n",
        escape(&v.name),
        escape(&v.candidate_revision),
        escape(&v.service),
        escape(&v.target),
        escape(v.state.label()),
        escape(&held_by(v)),
        v.now_s,
        v.duration_s,
        escape(&decision(v.state, v.decision.as_ref())),
        v.ledger_seq,
        escape(&v.registered_by),
    );
    body.push_str(&pending_block(v, forms));
    body.push_str(&actions_block(v, forms));
    if let Some(status) = &v.status {
        body.push_str(&format!(
            "<p>Ended: <strong>{}</strong>. <a href=\"/releases/{}/report\">The report</a>, as the ledger holds it.</p>\n",
            escape(status.label()),
            escape(&crate::field::url_segment(&v.name))
        ));
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
        body.push_str(&log_templates(j));
    }
    body.push_str(people);
    if let Some(obs) = &v.observation {
        body.push_str(&charts(obs, v.judge.as_ref(), v.duration_s, v.now_s, None));
    }
    page(&format!("backstop: {}", v.name), &body)
}

/// `GET /releases/NAME/report`: the release's report as the ledger holds it
/// (the one `advise` prints), judged nothing again.
async fn report_page(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match super::api::report_of(&s, &name).await {
        super::api::Found::Report(r) => html(StatusCode::OK, crate::report::render_html(&r)),
        super::api::Found::Not(status, message) => {
            let body = format!("<p><a href=\"/\">← all releases</a></p>\n<p>{}.</p>\n", escape(&message));
            html(status, page("no report", &body))
        }
    }
}

/// A dashboard form's fields.
#[derive(Deserialize)]
struct FormBody {
    /// The button pressed: an action or an answer.
    #[serde(rename = "do")]
    what: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
}

/// The form's fields, once its token is checked for this caller; else the page to answer with.
fn checked_form(s: &ApiState, caller: &Caller, body: &[u8]) -> Result<FormBody, Box<Response>> {
    let refuse = |status, msg: String| Box::new(html(status, page("not done", &format!("<p>{}</p>", escape(&msg)))));
    let form: FormBody = serde_urlencoded::from_bytes(body).map_err(|e| {
        refuse(StatusCode::UNPROCESSABLE_ENTITY, format!("form: expected fields do, reason and csrf: {e}"))
    })?;
    let now = s.agent.runtime().agent.clock.now_ms();
    s.signer.check_form_token(&caller.identity, &form.csrf, now).map_err(|e| {
        tracing::warn!(identity = %caller.identity, refusal = %e, "Dashboard form refused: bad CSRF token.");
        refuse(StatusCode::FORBIDDEN, format!("form refused: {e}; reload the page and try again"))
    })?;
    Ok(form)
}

/// The answer to a form: back to the release page when it took effect,
/// else a page saying what policy or the agent said, with the API's status.
fn after(release: Option<&str>, done: Result<Done, super::api::Failed>) -> Response {
    let back = release.map_or("/".to_string(), |n| format!("/releases/{}", crate::field::url_segment(n)));
    let (status, said) = match done {
        // Done, or policy's ruling ran or was a rejection: the release page shows what came of it.
        Ok(d) if d.status().is_success() => return Redirect::to(&back).into_response(),
        Ok(d) => (
            d.status(),
            match &d {
                Done::Ruled(r) => r.ruling.describe(),
                Done::View(_) => "done".into(),
            },
        ),
        Err((status, message)) => (status, message),
    };
    not_done(status, &said, &back)
}

/// A page saying what was not done and why, with a link `back`.
fn not_done(status: StatusCode, said: &str, back: &str) -> Response {
    let body = format!("<p>Not done: {}</p>\n<p><a href=\"{}\">back</a></p>\n", escape(said), escape(back));
    html(status, page("not done", &body))
}

async fn act_form(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = match checked_form(&s, &caller, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    after(Some(&name), act(&s, (&caller, Channel::Dashboard), &name, &form.what, form.reason).await)
}

async fn answer_form(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = match checked_form(&s, &caller, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let release = s.agent.list().into_iter().find(|v| v.pending_approval.as_ref().is_some_and(|a| a.request.id == id));
    after(
        release.as_ref().map(|v| v.name.as_str()),
        answer_request(&s, (&caller, Channel::Dashboard), &id, &form.what, form.reason).await,
    )
}

/// `GET /revisions`: what the ledger remembers of each revision and, for
/// an approver, a form to lift a quarantine with a reason — the API's
/// `POST /v1/revisions/…/clear`, recorded as given on the dashboard. Not
/// refreshed (a reason being typed would be lost).
async fn revisions_page(State(s): State<ApiState>, Extension(caller): Extension<Caller>) -> Response {
    let forms = Forms::for_caller(&s, &caller);
    let table = match crate::run::memory::revisions(&s.agent.runtime().ledger).await {
        Ok(views) => revisions_table(&views, &forms),
        Err(e) => format!("<p class=\"note\">The ledger did not answer ({}).</p>\n", escape(&crate::error::chain(&e))),
    };
    let body =
        format!("<h1>Revisions</h1>\n{table}<p><a href=\"/\">releases</a> · <a href=\"/v1/revisions\">JSON</a></p>\n");
    html(StatusCode::OK, page("revisions", &body))
}

/// One row per remembered revision; a quarantined one carries the clearing
/// form when `forms` may approve.
fn revisions_table(views: &[crate::run::memory::RevisionView], forms: &Forms) -> String {
    if views.is_empty() {
        return "<p>No revision remembered yet: none was rolled back or verified.</p>\n".into();
    }
    let segment = |x: &str| escape(&crate::field::url_segment(x));
    let rows: String = views
        .iter()
        .map(|v| {
            let state = v
                .quarantine
                .as_ref()
                .map_or("not quarantined".into(), |q| format!("quarantined: {}", escape(&q.describe())));
            let clear = if v.quarantine.is_some() && forms.approve {
                forms.form(
                    &format!("/ui/revisions/{}/{}", segment(&v.service), segment(&v.revision)),
                    "why it is safe to release again",
                    &[("clear", "clear the quarantine")],
                )
            } else {
                String::new()
            };
            let verified: Vec<String> = v.verified_on.keys().map(|t| escape(t)).collect();
            format!(
                "<tr><td>{}</td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{clear}</td></tr>\n",
                escape(&v.service),
                escape(&v.revision),
                verified.join(", "),
                v.rollbacks
            )
        })
        .collect();
    format!(
        "<div class=\"table-wrap\"><table>\n<thead><tr><th>service</th><th>revision</th><th>state</th>\
         <th>verified on</th><th>rollbacks</th><th></th></tr></thead>\n<tbody>\n{rows}</tbody></table></div>\n"
    )
}

/// `POST /ui/revisions/SERVICE/REVISION` with `do=clear`, a reason and the
/// form token: the quarantine lifted as the caller, or why not.
async fn clear_form(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((service, revision)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let form = match checked_form(&s, &caller, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    if form.what != "clear" {
        return not_done(StatusCode::UNPROCESSABLE_ENTITY, "form: `do` must be `clear`", "/revisions");
    }
    match super::revisions::clear_as(&s, (&caller, Channel::Dashboard), (&service, &revision), &form.reason).await {
        Ok(_) => Redirect::to("/revisions").into_response(),
        Err((status, message)) => not_done(status, &message, "/revisions"),
    }
}

/// A shared link's query.
#[derive(Deserialize)]
struct SharedQuery {
    request: String,
    exp: i64,
    sig: String,
}

/// `GET /shared/releases/NAME?request=ID&exp=MS&sig=HEX`: the release page,
/// read only, for whoever holds a link the agent signed for this release
/// and request (Slack users, who have no token); refused once it expires.
async fn shared(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<SharedQuery>,
) -> Response {
    let now = s.agent.runtime().agent.clock.now_ms();
    if let Err(e) = s.signer.check_link(&name, &q.request, q.exp, &q.sig, now) {
        tracing::warn!(release = %name, refusal = %e, "Shared link refused.");
        let body =
            format!("<p>This link does not open: {e}. Links from Slack last until their approval request expires.</p>");
        return html(StatusCode::FORBIDDEN, page("link refused", &body));
    }
    match s.agent.get(&name) {
        Some(v) => {
            let people = people_of(&s, &v).await;
            html(StatusCode::OK, release_page(&v, None, &people))
        }
        None => html(StatusCode::NOT_FOUND, page("not found", &format!("<p>No release named {}.</p>", escape(&name)))),
    }
}

/// A link to `release`'s page for request `request` that opens without a
/// token until `expires_ms`, under `agent_url` (as people reach the agent).
pub fn shared_link(
    signer: &super::signing::Signer,
    agent_url: &str,
    release: &str,
    request: &str,
    expires_ms: i64,
) -> String {
    format!(
        "{}/shared/releases/{}?{}",
        agent_url.trim_end_matches('/'),
        crate::field::url_segment(release),
        signer.link_query(release, request, expires_ms)
    )
}

/// The dashboard's routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/releases/{name}", get(release))
        .route("/releases/{name}/report", get(report_page))
        .route("/ui/releases/{name}", post(act_form))
        .route("/ui/approvals/{id}", post(answer_form))
        .route("/revisions", get(revisions_page))
        .route("/ui/revisions/{service}/{revision}", post(clear_form))
        .route("/shared/releases/{name}", get(shared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_release_never_shows_an_action_as_if_it_ran() {
        let promote = Decision::Promote;
        assert_eq!(decision(ReleaseState::Held, Some(&promote)), "promote (held: not run)");
        assert_eq!(decision(ReleaseState::Running, Some(&promote)), "promote");
        assert_eq!(decision(ReleaseState::Held, Some(&Decision::Continue)), "continue");
        assert_eq!(decision(ReleaseState::Held, None), "–");
    }
}
