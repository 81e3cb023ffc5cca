//! Configuration: `config.toml` (embedded as the defaults) overlaid by the user's file.
//!
//! Every table is `deny_unknown_fields`, and every value is checked while parsing, so an error
//! names the file, the line and the key. A user file may leave out any key: it then keeps the
//! default. The defaults are written once, in `config.toml`, the file people read: a user's
//! file is parsed, every key it leaves out is filled in from the embedded file, and the result
//! is deserialized, so the code holds no second copy of any default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::actions::{ACTIONS, Action, Place};
use crate::text::Names;

/// The keys of `[copy]` that were once in `[commit]`.
const COPY_KEYS: [&str; 5] = [
    "chunk_size",
    "clone",
    "kernel_copy",
    "in_flight",
    "write_behind",
];

/// Reads the `[copy]` keys a file still sets in `[commit]` as if they were in `[copy]`, and
/// says so; a key set in both places is an error.
fn move_copy_keys(table: &mut DeTable<'_>) -> Result<Vec<String>, String> {
    let mut moved = Vec::new();
    if let Some(DeValue::Table(commit)) = table.get_mut("commit").map(|v| v.get_mut()) {
        for key in COPY_KEYS {
            if let Some(v) = commit.remove(key) {
                moved.push((key, v));
            }
        }
    }
    if moved.is_empty() {
        return Ok(Vec::new());
    }
    let copy = table
        .entry(Spanned::new(0..0, toml::de::DeString::from("copy")))
        .or_insert_with(|| Spanned::new(0..0, DeValue::Table(DeTable::new())));
    let DeValue::Table(copy) = copy.get_mut() else {
        return Err("[copy] must be a table".into());
    };
    let mut notes = Vec::new();
    for (key, v) in moved {
        if copy.contains_key(key) {
            return Err(format!(
                "[commit] {key} and [copy] {key} are both set: [copy] is its place now; \
                 remove it from [commit]"
            ));
        }
        copy.insert(Spanned::new(0..0, toml::de::DeString::from(key)), v);
        notes.push(format!(
            "[commit] {key} is read as [copy] {key}, its place now; move it there"
        ));
    }
    Ok(notes)
}

/// The documented defaults, the same text users read.
pub const DEFAULTS: &str = include_str!("../config.toml");

/// The whole configuration. Every key is present once parsed: those a file leaves out come
/// from the embedded `config.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub scan: ScanConfig,
    pub protect: ProtectConfig,
    pub commit: CommitConfig,
    pub copy: CopyConfig,
    pub snapshot: SnapshotConfig,
    pub trash: TrashConfig,
    pub keys: Keys,
    pub theme: Theme,
    /// What the file says in a way that still works but should change (keys in their old
    /// place), for the CLI to print.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// The embedded defaults, parsed once.
static BUILT_IN: LazyLock<Result<Config, String>> = LazyLock::new(|| parse(DEFAULTS));

impl Default for Config {
    /// The embedded `config.toml` (a unit test proves it parses).
    fn default() -> Self {
        match &*BUILT_IN {
            Ok(c) => c.clone(),
            Err(e) => panic!("the embedded config.toml does not parse: {e}"),
        }
    }
}

/// `[scan]`: how paths are walked.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    pub max_depth: usize,
    pub follow_symlinks: bool,
    pub raw_extensions: Vec<String>,
    pub libvirt_domains: Vec<PathBuf>,
    pub libvirt_snapshots: Vec<PathBuf>,
    pub libvirt_checkpoints: Vec<PathBuf>,
    pub overlay_dirs: Vec<PathBuf>,
    pub libvirt_pools: Vec<PathBuf>,
    pub libvirt_uris: Vec<String>,
    pub proxmox: PathBuf,
}

/// `[protect]`: images kept read-only on request.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProtectConfig {
    pub globs: Vec<Spanned<String>>,
}

/// `[commit]`: what commits leave behind.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommitConfig {
    pub keep_top: bool,
}

/// `[copy]`: how data moves from one image into another, for every operation that copies.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    pub chunk_size: ChunkSize,
    pub clone: bool,
    pub kernel_copy: bool,
    pub in_flight: InFlight,
    pub write_behind: WriteBehind,
}

/// Data bytes written after which their writeback starts: 0 (at the next sync only), or 1 MiB
/// to 1 GiB.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "toml::Value")]
pub struct WriteBehind(pub u64);

impl TryFrom<toml::Value> for WriteBehind {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        let n = size_value(&v, "8MiB")?;
        if n != 0 && !(1 << 20..=1 << 30).contains(&n) {
            return Err(format!(
                "write_behind {n} must be 0 (off) or from 1MiB to 1GiB"
            ));
        }
        Ok(WriteBehind(n))
    }
}

/// Reads under way at once in a copy through memory: 1 to 64.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "i64")]
pub struct InFlight(pub usize);

impl TryFrom<i64> for InFlight {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match usize::try_from(n) {
            Ok(n @ 1..=64) => Ok(InFlight(n)),
            _ => Err(format!("in_flight {n} must be from 1 to 64")),
        }
    }
}

/// `[snapshot]`: how new overlays are made.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    pub cluster_size: ClusterSize,
}

/// `[trash]`: what deletes and merges leave behind them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrashConfig {
    pub keep: Keep,
    pub undo: bool,
}

/// How long `trash empty` keeps what it finds in the trash, by default.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Keep(pub std::time::Duration);

impl TryFrom<String> for Keep {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        crate::units::parse_duration(&v).map(Keep)
    }
}

/// A qcow2 cluster size: a power of two from 512 bytes to 2 MiB.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "toml::Value")]
pub struct ClusterSize(pub usize);

impl TryFrom<toml::Value> for ClusterSize {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        let n = size_value(&v, "64KiB")?;
        if !(512..=2 << 20).contains(&n) || !n.is_power_of_two() {
            return Err(format!(
                "cluster size {n} must be a power of two from 512 bytes to 2MiB"
            ));
        }
        Ok(ClusterSize(n as usize))
    }
}

/// Bytes per copy step of a commit, 64 KiB to 64 MiB, a multiple of 512.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "toml::Value")]
pub struct ChunkSize(pub u64);

impl TryFrom<toml::Value> for ChunkSize {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        let n = size_value(&v, "2MiB")?;
        if !(64 << 10..=64 << 20).contains(&n) || n % 512 != 0 {
            return Err(format!(
                "chunk size {n} must be between 64KiB and 64MiB and a multiple of 512"
            ));
        }
        Ok(ChunkSize(n))
    }
}

/// A size given as a number of bytes or as a string such as `like`.
fn size_value(v: &toml::Value, like: &str) -> Result<u64, String> {
    match v {
        toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| "must not be negative".into()),
        toml::Value::String(s) => parse_size(s),
        _ => Err(format!(
            "expected a number of bytes or a string like \"{like}\""
        )),
    }
}

/// Parses a size such as `512`, `64KiB` or `2 MiB` (B, KiB, MiB, GiB; K, M, G alike).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a size like \"2MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        u => return Err(format!("unknown unit \"{u}\" (use B, KiB, MiB or GiB)")),
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("\"{s}\" is too large"))
}

/// Keys of every UI action of [`ACTIONS`], in its order. Each binding keeps its position in
/// the file for error messages; one taken from the defaults has an empty span.
#[derive(Clone, Debug, PartialEq)]
pub struct Keys {
    bound: Vec<(Action, Spanned<Vec<KeySpec>>)>,
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table =
            std::collections::BTreeMap::<String, Spanned<Vec<KeySpec>>>::deserialize(d)?;
        if let Some(name) = table.keys().find(|n| Action::named(n).is_none()) {
            let names: Vec<String> = ACTIONS.iter().map(|d| format!("`{}`", d.name)).collect();
            return Err(serde::de::Error::custom(format!(
                "unknown field `{name}`, expected one of {}",
                names.join(", ")
            )));
        }
        let bound = ACTIONS
            .iter()
            .map(|d| {
                table
                    .remove(d.name)
                    .map(|specs| (d.action, specs))
                    .ok_or_else(|| serde::de::Error::missing_field(d.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Keys { bound })
    }
}

impl Keys {
    /// The keys bound to `action`.
    pub fn of(&self, action: Action) -> &[KeySpec] {
        self.bound
            .iter()
            .find(|(a, _)| *a == action)
            .map_or(&[], |(_, k)| k.get_ref().as_slice())
    }

    /// Every action with its keys, in table order.
    pub fn all(&self) -> impl Iterator<Item = (Action, &[KeySpec])> {
        self.bound.iter().map(|(a, k)| (*a, k.get_ref().as_slice()))
    }

    /// A key bound to two actions of one place: (key, the action whose binding was written in
    /// the file, the other action, byte offset of that binding).
    fn conflict(&self) -> Option<(KeySpec, &'static str, &'static str, usize)> {
        for place in [Place::Browse, Place::Dialog] {
            let mut seen: Vec<(&KeySpec, &'static str, &Spanned<Vec<KeySpec>>)> = Vec::new();
            for (action, keys) in self.bound.iter().filter(|(a, _)| a.def().place == place) {
                let name = action.def().name;
                for k in keys.get_ref() {
                    if let Some((_, other, other_keys)) = seen.iter().find(|(s, _, _)| *s == k) {
                        // Name the binding the user wrote; defaults have an empty span.
                        return Some(if keys.span().is_empty() {
                            (k.clone(), other, name, other_keys.span().start)
                        } else {
                            (k.clone(), name, other, keys.span().start)
                        });
                    }
                    seen.push((k, name, keys));
                }
            }
        }
        None
    }
}

/// One key: a code with modifiers. Parsed from strings like `"j"`, `"Down"`, `"Ctrl-c"`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(try_from = "String")]
pub struct KeySpec {
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
    pub code: KeyCode,
}

/// The key itself, without modifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyCode {
    Char(char),
    Named(NamedKey),
    F(u8),
}

/// Keys with names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamedKey {
    Up,
    Down,
    Left,
    Right,
    Enter,
    Esc,
    Tab,
    Backspace,
    Delete,
    Home,
    End,
    PageUp,
    PageDown,
}

const NAMED: [(&str, NamedKey); 13] = [
    ("Up", NamedKey::Up),
    ("Down", NamedKey::Down),
    ("Left", NamedKey::Left),
    ("Right", NamedKey::Right),
    ("Enter", NamedKey::Enter),
    ("Esc", NamedKey::Esc),
    ("Tab", NamedKey::Tab),
    ("Backspace", NamedKey::Backspace),
    ("Delete", NamedKey::Delete),
    ("Home", NamedKey::Home),
    ("End", NamedKey::End),
    ("PageUp", NamedKey::PageUp),
    ("PageDown", NamedKey::PageDown),
];

impl TryFrom<String> for KeySpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut spec = KeySpec {
            ctrl: false,
            alt: false,
            shift: false,
            code: KeyCode::Char(' '),
        };
        let mut rest = s.as_str();
        loop {
            if let Some(r) = rest.strip_prefix("Ctrl-").filter(|r| !r.is_empty()) {
                spec.ctrl = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("Alt-").filter(|r| !r.is_empty()) {
                spec.alt = true;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("Shift-").filter(|r| !r.is_empty()) {
                spec.shift = true;
                rest = r;
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        spec.code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCode::Char(c),
            _ if rest == "Space" => KeyCode::Char(' '),
            _ => {
                if let Some((_, k)) = NAMED.iter().find(|(n, _)| *n == rest) {
                    KeyCode::Named(*k)
                } else if let Some(n) = rest
                    .strip_prefix('F')
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| (1..=12).contains(n))
                {
                    KeyCode::F(n)
                } else {
                    return Err(format!(
                        "unknown key \"{s}\": use a single character, a name such as Up, Enter, \
                         PageDown, Space or F1, optionally after Ctrl-, Alt- or Shift-"
                    ));
                }
            }
        };
        Ok(spec)
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("Ctrl-")?;
        }
        if self.alt {
            f.write_str("Alt-")?;
        }
        if self.shift {
            f.write_str("Shift-")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("Space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::F(n) => write!(f, "F{n}"),
            KeyCode::Named(k) => {
                let name = NAMED.iter().find(|(_, v)| *v == k).map_or("?", |(n, _)| n);
                f.write_str(name)
            }
        }
    }
}

/// Colours of the terminal UI.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Theme {
    pub rw: Colour,
    pub ro: Colour,
    pub keep_ro: Colour,
    pub in_use: Colour,
    pub problem: Colour,
    pub selection: Colour,
    pub border: Colour,
    pub gauge: Colour,
}

/// A terminal colour: a named one, an RGB triple, or a 256-colour index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    Named(&'static str),
    Rgb(u8, u8, u8),
    Indexed(u8),
}

/// Colour names, as ratatui spells them in kebab case.
pub const COLOUR_NAMES: [&str; 17] = [
    "reset",
    "black",
    "red",
    "green",
    "yellow",
    "blue",
    "magenta",
    "cyan",
    "gray",
    "dark-gray",
    "light-red",
    "light-green",
    "light-yellow",
    "light-blue",
    "light-magenta",
    "light-cyan",
    "white",
];

impl<'de> Deserialize<'de> for Colour {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Colour::try_from(toml::Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<toml::Value> for Colour {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(i) => u8::try_from(i)
                .map(Colour::Indexed)
                .map_err(|_| format!("colour index {i} is not in 0-255")),
            toml::Value::String(s) => {
                if let Some(hex) = s.strip_prefix('#') {
                    let ok = hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit());
                    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0);
                    return if ok {
                        Ok(Colour::Rgb(byte(0), byte(2), byte(4)))
                    } else {
                        Err(format!("\"{s}\" is not a colour like \"#30a0ff\""))
                    };
                }
                COLOUR_NAMES
                    .iter()
                    .find(|n| **n == s)
                    .map(|n| Colour::Named(n))
                    .ok_or_else(|| {
                        format!(
                            "unknown colour \"{s}\": use one of {}, \"#rrggbb\" or 0-255",
                            COLOUR_NAMES.join(", ")
                        )
                    })
            }
            _ => Err("expected a colour name, \"#rrggbb\" or a number 0-255".into()),
        }
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config file {}: {message}", path.shown())]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

/// Where the configuration comes from: `--config FILE`, else the XDG location if it exists.
/// `None` means the embedded defaults.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("imgchain").join("config.toml");
    p.is_file().then_some(p)
}

/// Loads the configuration from `path`, or the embedded defaults for `None`.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        return parse(DEFAULTS).map_err(|message| ConfigError {
            path: PathBuf::from("(built-in config.toml)"),
            message,
        });
    };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        message: format!("cannot read it: {e}"),
    })?;
    parse(&text).map_err(|message| ConfigError {
        path: path.to_path_buf(),
        message,
    })
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1
}

/// `user` with every key it leaves out taken from `defaults`. What comes from the defaults
/// has an empty span, so a binding the user wrote is told apart from a default one.
fn fill_in<'i>(user: &mut DeTable<'i>, defaults: DeTable<'i>) {
    for (key, value) in defaults {
        let value = value.into_inner();
        match (user.get_mut(&key).map(Spanned::get_mut), value) {
            (Some(DeValue::Table(mine)), DeValue::Table(theirs)) => fill_in(mine, theirs),
            (Some(_), _) => {}
            (None, DeValue::Table(theirs)) => {
                let mut table = DeTable::new();
                fill_in(&mut table, theirs);
                user.insert(key, Spanned::new(0..0, DeValue::Table(table)));
            }
            (None, value) => {
                user.insert(key, Spanned::new(0..0, value));
            }
        }
    }
}

/// Parses configuration text, with the embedded defaults for every key it leaves out; the
/// error names the line and the key.
pub fn parse(text: &str) -> Result<Config, String> {
    let located = |mut e: toml::de::Error| {
        e.set_input(Some(text));
        e.to_string()
    };
    let mut table = DeTable::parse(text).map_err(located)?;
    let notes = move_copy_keys(table.get_mut())?;
    let defaults = DeTable::parse(DEFAULTS).map_err(|e| format!("built-in config.toml: {e}"))?;
    fill_in(table.get_mut(), defaults.into_inner());
    let mut config = Config::deserialize(toml::de::Deserializer::from(table)).map_err(located)?;
    config.notes = notes;
    for glob in &config.protect.globs {
        if let Err(e) = crate::forest::Protect::new(false, &[glob.get_ref()]) {
            let line = line_of(text, glob.span().start);
            return Err(format!("line {line}, [protect] globs: {e}: {}", e.source));
        }
    }
    if let Some((key, action, other, at)) = config.keys.conflict() {
        let line = line_of(text, at);
        return Err(format!(
            "line {line}, [keys] {action}: key \"{key}\" is also bound to \"{other}\"; \
             bind each key to one action (set [keys] {other} too)"
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        let c = parse(DEFAULTS).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(parse("").unwrap(), c);
        assert_eq!(c.copy.chunk_size, ChunkSize(2 << 20));
        assert_eq!(c.copy.write_behind, WriteBehind(8 << 20));
        assert!(!c.commit.keep_top);
        assert!(c.notes.is_empty());
        assert_eq!(c.scan.raw_extensions, vec!["img", "raw"]);
        assert_eq!(c.keys.of(Action::Quit)[1].to_string(), "Ctrl-c");
        assert_eq!(c.theme.rw, Colour::Named("green"));
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let c = parse("[scan]\nmax_depth = 3\n[protect]\nglobs = [\"*.gold\"]\n").unwrap();
        assert_eq!(c.scan.max_depth, 3);
        assert!(c.scan.follow_symlinks);
        assert_eq!(c.protect.globs[0].get_ref(), "*.gold");
        assert_eq!(c.keys, Config::default().keys);
        assert_eq!(c.theme, Config::default().theme);
    }

    #[test]
    fn write_behind_is_off_or_a_size() {
        let of = |v: &str| parse(&format!("[copy]\nwrite_behind = {v}\n"));
        assert_eq!(of("0").unwrap().copy.write_behind, WriteBehind(0));
        assert_eq!(
            of("\"64MiB\"").unwrap().copy.write_behind,
            WriteBehind(64 << 20)
        );
        for bad in ["4096", "\"2GiB\"", "-1", "true"] {
            assert!(of(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn copy_keys_in_commit_are_read_in_their_new_place_with_a_note() {
        let c = parse("[commit]\nkeep_top = true\nclone = false\nchunk_size = \"4MiB\"\n").unwrap();
        assert!(c.commit.keep_top && !c.copy.clone);
        assert_eq!(c.copy.chunk_size, ChunkSize(4 << 20));
        assert_eq!(c.copy.in_flight, Config::default().copy.in_flight);
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
        assert!(
            c.notes.iter().any(|n| n.contains("[copy] clone")),
            "{:?}",
            c.notes
        );
        let both = parse("[commit]\nclone = false\n[copy]\nclone = true\n").unwrap_err();
        assert!(both.contains("both set"), "{both}");
        assert!(parse("[commit]\nnot_a_key = 1\n").is_err());
    }

    #[test]
    fn defaults_fill_in_a_partial_table() {
        let c = parse("[commit]\nkeep_top = true\n[keys]\nquit = [\"Q\"]\n").unwrap();
        assert!(c.commit.keep_top);
        assert_eq!(c.copy.chunk_size, ChunkSize(2 << 20));
        assert_eq!(c.keys.of(Action::Quit)[0].to_string(), "Q");
        assert_eq!(c.keys.of(Action::Down)[0].to_string(), "j");
    }

    #[test]
    fn keys_round_trip() {
        for s in [
            "j",
            "G",
            "?",
            "Ctrl-c",
            "Alt-Shift-x",
            "PageDown",
            "F12",
            "Space",
            "-",
        ] {
            let k = KeySpec::try_from(s.to_string()).unwrap();
            assert_eq!(k.to_string(), s);
        }
        for bad in ["", "Foo", "F13", "Ctrl-", "jj"] {
            assert!(KeySpec::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_colours() {
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1 M"), Ok(1 << 20));
        assert!(parse_size("2 TB").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert_eq!(
            Colour::try_from(toml::Value::String("#0a0B0c".into())),
            Ok(Colour::Rgb(10, 11, 12))
        );
        assert_eq!(
            Colour::try_from(toml::Value::Integer(200)),
            Ok(Colour::Indexed(200))
        );
    }
}
