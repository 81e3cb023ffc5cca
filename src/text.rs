//! Names from disk in output (ARCHITECTURE.md §8): file names, backing names and VM names are
//! a tenant's to choose, so every one printed has its control and bidi characters escaped
//! ([`Names::shown`]), and every one in a suggested command is quoted for a POSIX shell
//! ([`Names::quoted`]).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether `c` could move the cursor, change the terminal or reorder the text around it.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `bytes` with every control or bidi character, and every byte that is not UTF-8, written as
/// a visible escape (`\e`, `\n`, `\t`, `\r`, `\xNN`, `\u{NNNN}`).
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(is_unsafe)
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\x1b' => out.push_str("\\e"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if is_unsafe(c) && (c as u32) < 0x100 => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if is_unsafe(c) => {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// [`escape_bytes`] of a string.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_bytes(s.as_bytes())
}

/// An argument quoted for a POSIX shell: as it is when it holds only characters no shell
/// treats specially, in single quotes otherwise, and as `$'...'` with escapes when it holds
/// a control or bidi character or a byte that is not UTF-8 (so no raw control byte is printed).
pub fn quote_bytes(arg: &[u8]) -> String {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(b);
    if !arg.is_empty() && arg.iter().all(plain) {
        // Only ASCII, so this is valid UTF-8.
        return String::from_utf8_lossy(arg).into_owned();
    }
    if matches!(escape_bytes(arg), Cow::Borrowed(_)) {
        return format!("'{}'", String::from_utf8_lossy(arg).replace('\'', "'\\''"));
    }
    let mut out = String::from("$'");
    for chunk in arg.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\'' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if is_unsafe(c) => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('\'');
    out
}

/// JSON text with every bidi control written as a `\uNNNN` escape: JSON leaves them raw, and
/// a terminal showing the JSON would reorder the text around them. They can only stand inside
/// strings, where the escape means the same character.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let bidi = |c: char| !c.is_control() && is_unsafe(c);
    if !json.chars().any(bidi) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if bidi(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer of JSON that passes what it is given through [`json_safe`]; a character split
/// between two writes waits for its end. Flush it to write everything.
pub struct JsonSafe<W: std::io::Write> {
    inner: W,
    carry: Vec<u8>,
}

impl<W: std::io::Write> JsonSafe<W> {
    pub fn new(inner: W) -> JsonSafe<W> {
        JsonSafe {
            inner,
            carry: Vec::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for JsonSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Every bidi control starts with one of these bytes in UTF-8.
        if self.carry.is_empty() && !buf.iter().any(|&b| b == 0xe2 || b == 0xd8) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(buf);
        let whole = match std::str::from_utf8(&data) {
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            _ => data.len(),
        };
        match std::str::from_utf8(&data[..whole]) {
            Ok(s) => self.inner.write_all(json_safe(s).as_bytes())?,
            Err(_) => self.inner.write_all(&data[..whole])?,
        }
        self.carry = data.split_off(whole);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.carry);
        self.inner.write_all(&rest)?;
        self.inner.flush()
    }
}

/// Displays a name with [`escape_bytes`].
pub struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_bytes(self.0))
    }
}

/// Displays a name with [`quote_bytes`].
pub struct Quoted<'a>(&'a [u8]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote_bytes(self.0))
    }
}

/// How names are put into output: [`Names::shown`] in text, [`Names::quoted`] in commands.
pub trait Names {
    fn name_bytes(&self) -> &[u8];

    /// For text: control and bidi characters escaped.
    fn shown(&self) -> Shown<'_> {
        Shown(self.name_bytes())
    }

    /// For a command to paste into a shell: quoted.
    fn quoted(&self) -> Quoted<'_> {
        Quoted(self.name_bytes())
    }
}

impl Names for Path {
    fn name_bytes(&self) -> &[u8] {
        self.as_os_str().as_bytes()
    }
}

impl Names for OsStr {
    fn name_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Names for str {
    fn name_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// A path as a JSON string: its bytes read as UTF-8, invalid sequences replaced.
pub fn lossy(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(escape("plain/disk.qcow2"), "plain/disk.qcow2");
        assert_eq!(escape("a\x1b]0;x\x07b"), "a\\e]0;x\\x07b");
        assert_eq!(escape("a\nerror[x]"), "a\\nerror[x]");
        assert_eq!(escape("evil\u{202e}2wocq.exe"), "evil\\u{202e}2wocq.exe");
        assert_eq!(escape("\u{85}"), "\\x85");
        assert_eq!(escape_bytes(b"a\xffb"), "a\\xffb");
        assert_eq!(escape("é ü"), "é ü");
    }

    #[test]
    fn quoting_picks_the_lightest_form() {
        assert_eq!(quote_bytes(b"/var/lib/x.qcow2"), "/var/lib/x.qcow2");
        assert_eq!(quote_bytes(b"a b"), "'a b'");
        assert_eq!(quote_bytes(b"a$(touch X).qcow2"), "'a$(touch X).qcow2'");
        assert_eq!(quote_bytes(b"it's"), "'it'\\''s'");
        assert_eq!(quote_bytes(b""), "''");
        assert_eq!(quote_bytes(b"a\nb'c"), "$'a\\x0ab\\'c'");
    }

    #[test]
    fn json_keeps_its_meaning_without_raw_bidi_controls() {
        let v = serde_json::json!({"path": "c\u{202e}2wocq.qcow2", "n": 1});
        let text = serde_json::to_string(&v).expect("json");
        let safe = json_safe(&text);
        assert!(!safe.contains('\u{202e}'));
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back, v);
        // Written a byte at a time, the characters split between writes are still escaped.
        let mut w = JsonSafe::new(Vec::new());
        for b in text.as_bytes() {
            std::io::Write::write_all(&mut w, std::slice::from_ref(b)).expect("write");
        }
        std::io::Write::flush(&mut w).expect("flush");
        assert_eq!(String::from_utf8(w.inner).expect("utf-8"), safe);
    }
}
