//! The self-contained HTML report: inline CSS and SVG, no script, and a
//! Content-Security-Policy that forbids the page from fetching anything.

use super::chart::metric_svg;
use super::{Report, render_markdown};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Render `r` as one HTML page.
pub fn render_html(r: &Report) -> String {
    let mut body = String::new();
    body.push_str(&format!(
        "<h1>backstop: {} {} — <span class=\"rec\">{}</span></h1>\n<p class=\"headline\">{}</p>\n",
        escape(&r.service),
        escape(&r.candidate_revision),
        escape(&r.recommendation.to_uppercase()),
        escape(&r.headline)
    ));
    body.push_str("<section class=\"charts\">\n");
    if let Some(obs) = &r.observation {
        for m in &obs.metrics {
            body.push_str("<figure>");
            body.push_str(&metric_svg(m, obs.step_s, r.duration_s, r.decided_at_s, r.known_onset_s));
            body.push_str("</figure>\n");
        }
    }
    body.push_str("</section>\n");
    // The Markdown report, verbatim, as the text of record beside the charts.
    body.push_str(&format!("<h2>Report</h2>\n<pre>{}</pre>\n", escape(&render_markdown(r))));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <title>backstop report: {} {}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; color: #222; }}\n\
         .rec {{ color: #b00; }}\n.headline {{ font-size: 1.1em; }}\n\
         figure {{ margin: 0 0 1em 0; }}\npre {{ background: #f6f6f6; padding: 1em; white-space: pre-wrap; }}\n\
         </style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(&r.service),
        escape(&r.candidate_revision)
    )
}
