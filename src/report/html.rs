//! The self-contained HTML report: inline CSS and SVG, no script, and a
//! Content-Security-Policy that forbids the page from fetching anything.

use super::Report;
use super::chart::metric_svg;

pub use super::text::escape;

/// The Content-Security-Policy of every page: nothing is fetched, nothing runs.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// A Kayenta-style scorecard: one row per metric, failing ones first, with
/// status colour, baseline and canary levels, effect and confidence.
pub fn scorecard(j: &crate::judge::JudgeResult) -> String {
    let mut rows: Vec<&crate::judge::Finding> = j.findings.iter().collect();
    rows.sort_by_key(|f| rank(f.status));
    let (shown, passing): (Vec<_>, Vec<_>) = rows.into_iter().partition(|f| rank(f.status) < 3);
    let mut html = table(&shown);
    if !passing.is_empty() {
        html.push_str(&format!(
            "<details><summary>{} passing or ignored metric(s)</summary>\n{}</details>\n",
            passing.len(),
            table(&passing)
        ));
    }
    html
}

/// Worst first: fails, then suspects, then not enough evidence, then passes.
fn rank(s: crate::judge::MetricStatus) -> u8 {
    use crate::judge::MetricStatus as S;
    match s {
        S::Failing | S::SharedBreach | S::BaselineShifted => 0,
        S::Suspect | S::Drifted => 1,
        S::NoData | S::InsufficientData | S::LabelsPending => 2,
        S::Ok => 3,
        S::Ignored => 4,
    }
}

/// The status in the words a reader acts on.
fn in_words(s: crate::judge::MetricStatus) -> &'static str {
    use crate::judge::MetricStatus as S;
    match s {
        S::Failing => "fail",
        S::SharedBreach => "fail (both sides breach the guard)",
        S::BaselineShifted => "fail (the baseline itself moved)",
        S::Suspect => "suspect: not yet a fail",
        S::Drifted => "drifted",
        S::NoData | S::InsufficientData => "not enough evidence",
        S::LabelsPending => "not enough evidence (labels pending)",
        S::Ok => "pass",
        S::Ignored => "ignored by policy",
    }
}

fn table(rows: &[&crate::judge::Finding]) -> String {
    let mut html = String::from(
        "<table class=\"scorecard\">\n<thead><tr><th>metric</th><th>verdict</th><th>baseline</th><th>canary</th>\
         <th>harmful shift</th><th>tolerance</th><th>why</th></tr></thead>\n<tbody>\n",
    );
    let num = |v: Option<f64>, f: &crate::judge::Finding| v.map_or("–".to_string(), |v| f.unit.show(v));
    for f in rows {
        let tolerance =
            f.tolerance.map_or("–".into(), |t| super::shift(t, &f.unit).trim_start_matches('+').to_string());
        html.push_str(&format!(
            "<tr class=\"s-{}\"><td>{}</td><td><span class=\"badge\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"why\">{}</td></tr>\n",
            rank(f.status),
            escape(&crate::assessor::evidence::metric_label(&f.metric)),
            escape(in_words(f.status)),
            escape(&num(f.baseline, f)),
            escape(&num(f.canary, f)),
            escape(&f.effect.map_or("–".into(), |e| super::shift(e, &f.unit))),
            escape(&tolerance),
            escape(&f.explanation),
        ));
    }
    html.push_str("</tbody></table>\n");
    html
}

/// Styles shared by the report and the dashboard: readable on a phone.
pub const STYLE: &str = "body { font-family: sans-serif; margin: 1em auto; max-width: 60em; padding: 0 1em; color: #222; }\n\
    table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1em 0; }\n\
    th, td { text-align: left; padding: 0.3em 0.5em; border-bottom: 1px solid #ddd; }\n\
    .table-wrap { overflow-x: auto; }\n\
    .s-0 .badge { background: #c62828; color: #fff; } .s-1 .badge { background: #f9a825; }\n\
    .s-2 .badge { background: #bbb; } .s-3 .badge { background: #2e7d32; color: #fff; } .s-4 .badge { background: #eee; }\n\
    .badge { padding: 0.1em 0.4em; border-radius: 0.3em; font-size: 0.9em; }\n\
    .rec { color: #b00; } .headline { font-size: 1.1em; }\n\
    figure { margin: 0 0 1em 0; } figure svg { max-width: 100%; height: auto; }\n\
    td.why { font-size: 0.9em; color: #444; } details summary { cursor: pointer; margin: 0.5em 0; }\n\
    .pending { background: #fff3e0; border-left: 4px solid #ef6c00; padding: 0.5em 1em; }\n\
    code { background: #f3f3f3; padding: 0 0.2em; }\n";

/// Render `r` as one HTML page.
pub fn render_html(r: &Report) -> String {
    let title = format!("backstop report: {} {}", r.service, r.candidate_revision);
    page(&title, &report_body(r))
}

/// A whole page with the strict CSP and shared styles; `body` is trusted HTML.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// The report as HTML: headline, scorecard, charts (the judge's window
/// shaded), then the rules, the model's part and what would change it.
pub fn report_body(r: &Report) -> String {
    let mut body = format!(
        "<h1>backstop: {} {} — <span class=\"rec\">{}</span></h1>\n<p class=\"headline\">{}</p>\n",
        escape(&r.service),
        escape(&r.candidate_revision),
        escape(&r.recommendation.to_uppercase()),
        escape(&r.headline)
    );
    body.push_str(&plan(r.plan.as_ref()));
    let ramp = super::ramp_lines(r);
    if !ramp.is_empty() {
        body.push_str(&list("Traffic ramp", &ramp));
    }
    if let Some(j) = &r.judge {
        body.push_str(&format!(
            "<h2>Scorecard at t={}s</h2>\n<p>{}</p>\n<div class=\"table-wrap\">{}</div>\n",
            j.now_s,
            escape(&j.summary),
            scorecard(j)
        ));
    }
    if let Some(j) = &r.judge {
        body.push_str(&log_templates(j));
    }
    match (&r.observation, &r.charts) {
        (Some(obs), _) => body.push_str(&charts(obs, r.judge.as_ref(), r.duration_s, r.decided_at_s, r.known_onset_s)),
        (None, super::Charts::NotDrawn { reason }) => {
            body.push_str(&format!("<p class=\"note\">No charts: {}.</p>\n", escape(reason)));
        }
        (None, _) => {}
    }
    body.push_str(&list("Policy rules", &r.rules));
    body.push_str(&format!("<h2>Model</h2>\n<pre>{}</pre>\n", escape(&super::markdown::model_lines(&r.model))));
    body.push_str(&list("What would change this recommendation", &r.would_change));
    body
}

/// One chart per metric, each with the window the judge's numbers at
/// `decided_at_s` come from shaded (and the known fault onset, if any).
pub fn charts(
    obs: &crate::signals::Observation,
    judge: Option<&crate::judge::JudgeResult>,
    duration_s: u64,
    decided_at_s: u64,
    onset_s: Option<u64>,
) -> String {
    let (mut shown, mut folded) = (String::new(), String::new());
    for m in &obs.metrics {
        let finding = judge.and_then(|j| j.findings.iter().find(|f| f.metric == m.spec.name));
        let window = finding.and_then(|f| f.window_s);
        let figure =
            format!("<figure>{}</figure>\n", metric_svg(m, obs.step_s, duration_s, (decided_at_s, window), onset_s));
        // The charts that explain the decision first; passing metrics folded below them.
        match finding.map(|f| rank(f.status)) {
            Some(r) if r >= 3 => folded.push_str(&figure),
            _ => shown.push_str(&figure),
        }
    }
    if !folded.is_empty() {
        shown.push_str(&format!("<details><summary>charts of passing metrics</summary>\n{folded}</details>\n"));
    }
    format!("<section class=\"charts\">\n{shown}</section>\n")
}

/// The judged log templates, quoted as the watched system's own text.
pub fn log_templates(j: &crate::judge::JudgeResult) -> String {
    let rows: Vec<String> = j
        .log_templates()
        .iter()
        .take(20)
        .map(|(f, t)| {
            format!(
                "<li>{} {} ({} canary / {} baseline lines): <code>{}</code> — e.g. <code>{}</code></li>\n",
                escape(&f.metric),
                f.status,
                t.canary_lines,
                t.baseline_lines,
                escape(&t.template),
                escape(&t.example)
            )
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "<h2>Log templates <small>(untrusted text from the watched systems)</small></h2>\n<ul>\n{}</ul>\n",
        rows.concat()
    )
}

/// The exact action first: what runs (or would, or an approval runs), step by step.
fn plan(p: Option<&crate::executor::ActionPlan>) -> String {
    let Some(p) = p else { return String::new() };
    let steps: String = p.steps.iter().map(|s| format!("<li><code>{}</code></li>", escape(s))).collect();
    format!(
        "<h2>Plan</h2>\n<p>{} <code>{}</code> to <code>{}</code> (plan {})</p>\n<ol class=\"steps\">{steps}</ol>\n",
        p.kind,
        escape(&p.target),
        escape(&p.to_revision),
        escape(&p.id)
    )
}

fn list(title: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let lis: String = items.iter().map(|i| format!("<li>{}</li>\n", escape(i))).collect();
    format!("<h2>{}</h2>\n<ul>\n{lis}</ul>\n", escape(title))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{BadDirection, MetricSeries, MetricSpec, Unit};

    /// The audit's L4: ESC and U+202E from a metric name reached the HTML
    /// report raw (the summary, a `title=` attribute and the SVG text).
    #[test]
    fn control_and_bidi_characters_never_reach_the_page() {
        let name = "err\u{1b}[2J<b>x</b>\u{202e}gpj.exe";
        let spec =
            MetricSpec { name: name.into(), unit: Unit::Other("u\u{1b}".into()), bad_direction: BadDirection::Up };
        let finding = crate::judge::Finding::empty(&spec);
        let judged = crate::judge::JudgeResult {
            verdict: crate::judge::Verdict::Inconclusive,
            now_s: 60,
            window_complete: false,
            findings: vec![finding],
            summary: name.into(),
            log_mining: None,
        };
        let series = MetricSeries { spec, baseline: vec![Some(1.0); 6], canary: vec![Some(2.0); 6] };
        let page = format!(
            "{}{}{}",
            scorecard(&judged),
            metric_svg(&series, 10, 60, (60, Some(30)), None),
            escape(&judged.summary)
        );
        for bad in ['\u{1b}', '\u{202e}'] {
            assert!(!page.contains(bad), "{bad:?} in {page}");
        }
        assert!(!page.contains("<b>"), "{page}");
    }
}
