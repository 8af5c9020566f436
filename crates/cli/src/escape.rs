//! Text for people: a file name can hold any byte, including a terminal's
//! escape sequences. Everything printed for humans shows control characters
//! escaped (`\x1b`, `\n`), so a hostile name cannot rewrite the screen or
//! fake a line. JSON output stays exact.

use std::borrow::Cow;

/// `text` with its control characters escaped.
pub fn human(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        for (text, shown) in [
            ("plain name.txt", "plain name.txt"),
            ("\u{1b}[2J\u{1b}[31mowned", "\\x1b[2J\\x1b[31mowned"),
            ("two\nlines", "two\\nlines"),
            ("bell\u{7}", "bell\\x07"),
            ("c1\u{9b}31m", "c1\\x9b31m"),
            ("tab\there", "tab\\there"),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ] {
            assert_eq!(human(text), shown, "{text:?}");
        }
    }
}
