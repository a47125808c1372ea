//! The Markdown report: a PR comment, a chat message, a step summary.

use super::text::{code, md};
use super::{Report, fmt};
use crate::judge::{Breach, Finding, Limit, MetricStatus};

fn cell(v: Option<f64>, unit: &crate::signals::Unit) -> String {
    v.map_or_else(|| "–".into(), |x| fmt(x, unit))
}

/// The scorecard's guard column: a guard that fired, or the baseline's own move.
fn guard_cell(f: &Finding) -> String {
    if let Some(h) = &f.guard {
        let (op, v) = match h.guard.limit {
            Limit::Max(v) => ("above", v),
            Limit::Min(v) => ("below", v),
        };
        let who = match h.breach {
            Breach::Canary => "canary",
            Breach::Shared => "both (incident)",
        };
        return format!("{who} {op} {} for {}s at t={}s", fmt(v, &f.unit), h.guard.for_s, h.at_s);
    }
    match &f.baseline_shift {
        Some(s) => format!("baseline moved {} → {}", fmt(s.before, &f.unit), fmt(s.after, &f.unit)),
        None => "–".into(),
    }
}

/// Render `r` as Markdown.
pub fn render_markdown(r: &Report) -> String {
    let mut o = String::new();
    header(&mut o, r);
    let ramp = super::ramp_lines(r);
    if !ramp.is_empty() {
        o.push_str("\n### Traffic ramp\n\n");
        for line in &ramp {
            o.push_str(&format!("- {}\n", md(line)));
        }
    }
    if let Some(j) = &r.judge {
        evidence(&mut o, j);
    }
    if let Some(obs) = &r.observation
        && !obs.events.is_empty()
    {
        // Text from the systems being watched: shown as data, quoted, never acted on.
        o.push_str("\n### Events (untrusted text from the watched systems)\n\n");
        for e in obs.events.iter().rev().take(20) {
            o.push_str(&format!("- t={}s {} `{}`: `{}`\n", e.t_s, e.target, code(e.kind.as_str()), code(&e.message)));
        }
    }
    model_section(&mut o, r);
    o.push_str("\n### Policy rules\n\n");
    for rule in &r.rules {
        o.push_str(&format!("- {}\n", md(rule)));
    }
    if !r.would_change.is_empty() {
        o.push_str("\n### What would change this recommendation\n\n");
        for w in &r.would_change {
            o.push_str(&format!("- {}\n", md(w)));
        }
    }
    o
}

/// The headline, the release and the exact action.
fn header(o: &mut String, r: &Report) {
    let mode = if r.acting { "watch" } else { "advise (dry run: nothing executes)" };
    o.push_str(&format!(
        "## backstop: {} {} — **{}**\n\n{}\n\n",
        md(&r.service),
        md(&r.candidate_revision),
        r.recommendation.to_uppercase(),
        md(&r.headline)
    ));
    o.push_str(&format!(
        "- release `{}` (`{}`), target `{}`, mode {mode}\n- decision at t={}s of {}s\n",
        code(&r.release),
        code(&r.release_id),
        code(&r.target),
        r.decided_at_s,
        r.duration_s
    ));
    if let Some(onset) = r.known_onset_s {
        o.push_str(&format!("- known fault onset (from the source, never shown to the judge): t={onset}s\n"));
    }
    if let Some(p) = &r.plan {
        o.push_str("\n### The exact action\n\n");
        for (i, s) in p.steps.iter().enumerate() {
            o.push_str(&format!("{}. {}\n", i + 1, md(s)));
        }
    }
}

/// The judge's findings as a table, their explanations, and the log templates.
fn evidence(o: &mut String, j: &crate::judge::JudgeResult) {
    o.push_str(&format!("\n### Evidence\n\nJudge: **{}** — {}\n\n", j.verdict, md(&j.summary)));
    o.push_str("| metric | status | baseline | canary | harmful shift | tolerance | z / critical | window | guard |\n");
    o.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for f in &j.findings {
        let status = if f.status == MetricStatus::Failing { "**FAILING**".to_string() } else { f.status.to_string() };
        let z = match (f.z, f.critical) {
            (Some(z), Some(c)) => format!("{z:.1} / {c:.1}"),
            _ => "–".into(),
        };
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            md(&f.metric),
            status,
            md(&cell(f.baseline, &f.unit)),
            md(&cell(f.canary, &f.unit)),
            md(&f.effect.map_or_else(|| "–".into(), |e| super::shift(e, &f.unit))),
            md(&f
                .tolerance
                .map_or_else(|| "–".into(), |t| super::shift(t, &f.unit).trim_start_matches('+').to_string())),
            z,
            f.window_s.map_or_else(|| "–".into(), |w| format!("{w}s")),
            md(&guard_cell(f)),
        ));
    }
    o.push('\n');
    for f in &j.findings {
        o.push_str(&format!("- {}\n", md(&f.explanation)));
    }
    let templates = j.log_templates();
    if !templates.is_empty() {
        // Text from the systems being watched: shown as data, quoted, never acted on.
        o.push_str("\n### Log templates (untrusted text from the watched systems)\n\n");
        for (f, t) in templates.iter().take(20) {
            o.push_str(&format!(
                "- {} {} ({} canary / {} baseline lines): `{}` — e.g. `{}`\n",
                md(&f.metric),
                f.status,
                t.canary_lines,
                t.baseline_lines,
                code(&t.template),
                code(&t.example)
            ));
        }
    }
}

fn model_section(o: &mut String, r: &Report) {
    o.push_str("\n### Model\n\n");
    o.push_str(&model_lines(&r.model));
}

/// The model's verdict, its findings with cited ids, the cited evidence and usage, as Markdown.
pub fn model_lines(m: &super::ModelReport) -> String {
    let mut o = format!("{}\n", md(&m.status));
    if let Some(v) = &m.verdict {
        o.push('\n');
        for f in &v.findings {
            let ids: Vec<String> = f.evidence.iter().map(|id| md(id)).collect();
            o.push_str(&format!("- {}: {} [{}]\n", f.claim, md(&f.summary), ids.join(", ")));
        }
        o.push_str(&format!("\nWhat would change its mind: {}\n", md(&v.what_would_change_my_mind)));
    }
    if !m.cited.is_empty() {
        o.push_str("\nCited evidence:\n\n");
        for e in &m.cited {
            let label = if e.untrusted { " (untrusted text)" } else { "" };
            o.push_str(&format!("- `{}` {}{label}: `{}`\n", code(&e.id), e.fact, code(&e.text)));
        }
    }
    if m.usage.calls > 0 {
        o.push_str(&format!(
            "\nModel usage for this release: {} call(s), {} tokens ({} prompt, {} completion); {} tool call(s) in the latest consultation.\n",
            m.usage.calls, m.usage.total_tokens, m.usage.prompt_tokens, m.usage.completion_tokens, m.tool_calls
        ));
    }
    o
}
