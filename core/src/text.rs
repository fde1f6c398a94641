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

/// Bytes of each exec stream kept for parsing; the rest is read and dropped so the command
/// never blocks.
pub const MAX_CAPTURE: usize = 1 << 20;

/// Whether an output was cut at `MAX_CAPTURE` (a lossy UTF-8 cut may change the last bytes).
pub fn was_cut(output: &str) -> bool {
    output.len() + 3 >= MAX_CAPTURE
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
