//! How an error and its causes read on one line, wherever anyhow's `{:#}` does not print them
//! (log fields, termination messages, the secret writer's retries): words, never a Debug form.

/// An error and its causes, outermost first.
pub fn error_sources<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

/// "outer: inner: innermost", one readable line: each cause's message once (none that an
/// outer message already contains), never a Debug form; at most about 1,500 bytes.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in error_sources(error) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    let mut joined = parts.join(": ");
    if joined.len() > 1500 {
        let mut end = 1500;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        joined.truncate(end);
        joined.push_str("...");
    }
    joined
}
