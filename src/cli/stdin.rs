//! Standard input, read in one place for every command that takes something on it (a token, a password,
//! the kubelet's request, a credential helper's document): bounded, so that a stream piped in by mistake
//! is refused rather than read into memory, and with the line ending kept or dropped as the caller says.

use std::io::{BufRead as _, Read as _};

/// The most any command reads from standard input: what they take is a few KiB at most.
pub const MAX_BYTES: u64 = 1 << 20;

/// How much of standard input to read, and what of it to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// All of it, as it is (a JSON document).
    All,
    /// All of it without its trailing line endings (a value piped in with `echo`).
    Value,
    /// The first line without its line ending; nothing after it is read.
    FirstLine,
}

/// Read `part` of standard input; `what` names it in errors ("reading {what}: ...").
pub fn read(what: &str, part: Part) -> Result<String, String> {
    read_from(std::io::stdin().lock(), what, part)
}

fn read_from(input: impl std::io::BufRead, what: &str, part: Part) -> Result<String, String> {
    let mut bytes = Vec::new();
    let mut input = input.take(MAX_BYTES + 1);
    match part {
        Part::All | Part::Value => input.read_to_end(&mut bytes),
        Part::FirstLine => input.read_until(b'\n', &mut bytes),
    }
    .map_err(|e| format!("reading {what}: {e}"))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("reading {what}: longer than {MAX_BYTES} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("reading {what}: stream did not contain valid UTF-8"))?;
    Ok(match part {
        Part::All => text,
        Part::Value | Part::FirstLine => text.trim_end_matches(['\n', '\r']).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], part: Part) -> Result<String, String> {
        read_from(input, "standard input", part)
    }

    #[test]
    fn each_part_keeps_what_its_callers_need() {
        assert_eq!(read(b"{\"a\": 1}\n", Part::All).unwrap(), "{\"a\": 1}\n");
        assert_eq!(read(b"tgr_x\r\n\n", Part::Value).unwrap(), "tgr_x");
        assert_eq!(read(b"  secret \r\nsecond line\n", Part::FirstLine).unwrap(), "  secret ");
        assert_eq!(read(b"no newline", Part::FirstLine).unwrap(), "no newline");
        assert_eq!(read(b"", Part::Value).unwrap(), "");
    }

    #[test]
    fn too_long_or_not_text_is_refused() {
        let long = vec![b'x'; MAX_BYTES as usize + 1];
        assert!(read(&long, Part::All).unwrap_err().contains("longer than"));
        assert!(read(&long[1..], Part::All).is_ok());
        assert!(read(b"\xff\xfe", Part::Value).unwrap_err().contains("UTF-8"));
    }
}
