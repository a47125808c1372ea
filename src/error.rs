//! Errors as people read them: one line with every cause. Each module has
//! its own typed error; the aggregate for the binaries is [`crate::run::Error`].

/// An error and its causes on one line: `outer: inner: root` (a cause the
/// message already ends with is not repeated).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !text.ends_with(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = c.source();
    }
    text
}
