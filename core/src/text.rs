//! Bounds text before it goes into status, events or logs.

/// Keeps at most `max` bytes of command output, cut at a char boundary, for status and events.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes cut]", &text[..end], text.len() - end)
}

/// stderr kept in status and events.
pub const STDERR_EXCERPT: usize = 512;

/// Longest condition message and Event note.
pub const MESSAGE_LIMIT: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_char_boundary() {
        assert_eq!(bounded("abc", 10), "abc");
        let b = bounded("ééééé", 3);
        assert!(b.starts_with('é') && b.contains("bytes cut"));
    }
}
