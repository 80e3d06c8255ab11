//! Log lines that a client cannot forge: every control character in a formatted event (a
//! newline, a carriage return, an escape byte, the Unicode line separators) is written as an
//! escape sequence, so user-supplied text in a field can neither start a new log entry nor
//! drive a terminal.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Makes writers that escape control characters before they reach `W`.
pub struct EscapingMakeWriter<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for EscapingMakeWriter<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter(self.0.make_writer())
    }
}

/// A writer that escapes control characters; the formatter hands it one whole event per
/// write, ending in the event's own newline, which is kept.
pub struct EscapingWriter<W>(W);

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `line` with control characters escaped; one trailing `\n` stays a line break.
pub fn escape_line(line: &[u8]) -> Vec<u8> {
    let (body, end) = match line.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + end.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(end);
    out
}

#[cfg(test)]
mod tests {
    use super::escape_line;

    #[test]
    fn control_characters_are_escaped_and_the_line_end_kept() {
        let line = "INFO connect refused reason=user.x\nERROR forged\r\x1b[31mred\u{2028}!\n";
        let out = String::from_utf8(escape_line(line.as_bytes())).unwrap();
        assert_eq!(
            out,
            "INFO connect refused reason=user.x\\nERROR forged\\r\\u{1b}[31mred\\u{2028}!\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
        assert_eq!(escape_line(b"plain\ttext"), b"plain\ttext");
    }
}
