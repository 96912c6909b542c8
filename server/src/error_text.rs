//! An error as an operator reads it: the error and its causes, each said
//! once.
//!
//! An error type that prints its cause in its own message and also hands
//! it out as its `source()` (the store's `Io { context, source }`, many
//! library errors) makes the usual `{:#}` chain print the cause twice:
//! `open x: Permission denied (os error 13): Permission denied (os error
//! 13)`. Rather than auditing every error type of every crate, the one
//! place that turns a chain into text skips a cause its parent already
//! said.

/// `e` and its causes joined by `: `, a cause left out when the text
/// before it already ends with it. Line breaks inside a message (a TOML
/// error's picture of the line) are kept.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct SaysItsSource(std::io::Error);
    impl std::fmt::Display for SaysItsSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "open /x: {}", self.0)
        }
    }
    impl std::error::Error for SaysItsSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(13);
        let e = anyhow::Error::new(SaysItsSource(io)).context("open the store");
        let text = chain(&e);
        assert_eq!(text.matches("os error 13").count(), 1, "{text}");
        assert!(text.starts_with("open the store: open /x: "), "{text}");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain(&plain), "outer: inner");
    }
}
