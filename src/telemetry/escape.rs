//! Log lines that a client cannot forge: every control character in a formatted event (a
//! newline, a carriage return, an escape byte, the Unicode line separators) is written as an
//! escape sequence, so user-supplied text in a field can neither start a new log entry nor
//! drive a terminal. On a terminal the formatter's own colour codes (SGR sequences) pass;
//! field values are escaped before that, by [`escape_text`], so a client cannot send one.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Makes writers that escape control characters before they reach `M`'s writers.
pub struct EscapingMakeWriter<M> {
    make: M,
    keep_sgr: bool,
}

impl<M> EscapingMakeWriter<M> {
    /// Escapes everything (`keep_sgr` false) or everything but colour codes.
    pub fn new(make: M, keep_sgr: bool) -> Self {
        Self { make, keep_sgr }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for EscapingMakeWriter<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.make.make_writer(),
            keep_sgr: self.keep_sgr,
        }
    }
}

/// A writer that escapes control characters; the formatter hands it one whole event per
/// write, ending in the event's own newline, which is kept.
pub struct EscapingWriter<W> {
    inner: W,
    keep_sgr: bool,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape_line(buf, self.keep_sgr))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `line` with control characters escaped; one trailing `\n` stays a line break.
pub fn escape_line(line: &[u8], keep_sgr: bool) -> Vec<u8> {
    let (body, end) = match line.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let mut out = escape_text(&String::from_utf8_lossy(body), keep_sgr).into_bytes();
    out.extend_from_slice(end);
    out
}

/// `text` with every control character escaped (tabs kept); with `keep_sgr`, colour codes
/// (`ESC [ digits ; … m`) are copied as they are.
pub fn escape_text(text: &str, keep_sgr: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}' && keep_sgr {
            if let Some(len) = sgr_len(rest) {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The length of the colour code `s` starts with, if it starts with one.
fn sgr_len(s: &str) -> Option<usize> {
    let params = s.strip_prefix("\u{1b}[")?;
    let digits = params
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (params.as_bytes().get(digits) == Some(&b'm')).then_some(2 + digits + 1)
}

#[cfg(test)]
mod tests {
    use super::{escape_line, escape_text};

    #[test]
    fn control_characters_are_escaped_and_the_line_end_kept() {
        let line = "INFO connect refused reason=user.x\nERROR forged\r\x1b[31mred\u{2028}!\n";
        let out = String::from_utf8(escape_line(line.as_bytes(), false)).unwrap();
        assert_eq!(
            out,
            "INFO connect refused reason=user.x\\nERROR forged\\r\\u{1b}[31mred\\u{2028}!\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
        assert_eq!(escape_line(b"plain\ttext", false), b"plain\ttext");
    }

    #[test]
    fn colour_codes_pass_only_when_kept_and_other_escapes_never() {
        let text = "\x1b[2m12:00\x1b[0m \x1b[32mINFO\x1b[0m x\x1b[2J\x1b]0;title\x07\n";
        assert_eq!(
            escape_text(text, true),
            "\x1b[2m12:00\x1b[0m \x1b[32mINFO\x1b[0m x\\u{1b}[2J\\u{1b}]0;title\\u{7}\\n"
        );
        assert!(!escape_text(text, false).contains('\x1b'));
    }
}
