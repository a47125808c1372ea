//! Text from outside (metric and event names, log and event messages, the
//! model's words) made inert for the report formats: Markdown is rendered by
//! GitHub and chat clients, which also render inline HTML and links, and a
//! terminal interprets escape sequences.

/// Characters that change how text displays without being visible: bidi
/// overrides and isolates, zero-width characters, the BOM.
fn invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// One line of plain text: control characters (ESC sequences, newlines that
/// would end a list item or a code span) become spaces, invisible formatting
/// characters are dropped.
pub fn plain(s: &str) -> String {
    s.chars().filter(|c| !invisible(*c)).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Text for inside a Markdown code span: one line, no backtick to close it.
pub fn code(s: &str) -> String {
    plain(s).replace('`', "'")
}

/// Text for Markdown prose and table cells: one line, with every character
/// that could start HTML, an entity, a link or image, a code span or a table
/// cell escaped. Emphasis (`_`, `*`) is left alone: it cannot carry anything
/// and metric names are full of underscores.
pub fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in plain(s).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '[' | ']' | '|' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text made safe for HTML content and quoted attributes: markup escaped,
/// and control and bidirectional characters dropped (an ESC or U+202E in a
/// metric name must not reorder or hide what a person reads).
pub fn escape(s: &str) -> String {
    crate::field::strip_unsafe(s, true)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "<img src=x onerror=alert(1)>",
        "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\">",
        "line one\n<script>alert(1)</script>",
        "\u{1b}[2J\u{1b}]8;;https://evil.example\u{7}click\u{1b}]8;;\u{7}",
        "safe\u{202E}txt.exe",
        "zero\u{200B}width",
        "[click](https://evil.example) ![x](https://evil.example/x.png)",
        "| fake | cell |",
        "`code` break",
    ];

    #[test]
    fn hostile_text_is_inert_in_every_form() {
        for h in HOSTILE {
            for out in [md(h), code(h), plain(h)] {
                assert!(!out.chars().any(|c| c.is_control() || invisible(c)), "{h:?} -> {out:?}");
            }
            let m = md(h);
            // Every markup character left is escaped by a backslash.
            let unescaped = |c: char| m.match_indices(c).any(|(i, _)| i == 0 || !m[..i].ends_with('\\'));
            for c in ['[', ']', '|', '`', '!'] {
                assert!(!unescaped(c), "{h:?} -> {m:?}");
            }
            assert!(!m.contains('<') && !m.contains('>'), "{h:?} -> {m:?}");
            assert!(!code(h).contains('`'));
        }
        assert_eq!(md("http_error_ratio"), "http_error_ratio");
        assert_eq!(plain("a\nb"), "a b");
    }
}
