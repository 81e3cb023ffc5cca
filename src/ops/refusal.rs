//! Why an operation does not run: the guards' refusals and the errors before its first write,
//! each with its exit code (ARCHITECTURE.md §5).

use std::path::{Path, PathBuf};

use super::OpKind;
use crate::exit;
use crate::forest::KeepRoReason;
use crate::image::handle::{OpenError, ReopenError};
use crate::image::lock::LockError;
use crate::text::Names;

/// Why an operation was refused or could not start. Nothing has been written when one of
/// these is returned, except [`Refusal::Internal`]. Each has its exit code (ARCHITECTURE.md §5),
/// a fact that names the file ([`Refusal::fact`]) and what to do about it ([`Refusal::way`]),
/// which each surface words its own way: the CLI by its flags (`Display`), the UI by its keys
/// ([`Refusal::ui_text`]).
#[derive(Debug)]
pub enum Refusal {
    NoBacking {
        top: PathBuf,
        op: OpKind,
    },
    BrokenChain {
        top: PathBuf,
        op: OpKind,
        message: String,
    },
    BaseNotInChain {
        top: PathBuf,
        base: PathBuf,
    },
    KeepReadOnly {
        path: PathBuf,
        reason: KeepRoReason,
        /// For `inherited`: a protected overlay that passes it down.
        protected_by: Option<PathBuf>,
    },
    /// Another process holds what the commit needs (QEMU's lock message and the holder).
    InUse(LockError),
    SharedBase {
        base: PathBuf,
        others: Vec<PathBuf>,
    },
    /// Images are built on the one to remove, and the request does not cover them.
    HasOverlays {
        path: PathBuf,
        overlays: Vec<PathBuf>,
    },
    /// A qcow2 v2 image the run must write where it may grow or need a new refcount block,
    /// which v2 (no dirty bit) cannot survive a crash in: `--amend` (the dialogs' amend key)
    /// upgrades it to compat=1.1 first.
    NeedsAmend {
        path: PathBuf,
        what: String,
    },
    /// The file named as the new backing file (or target) cannot serve: `what` says why.
    BadTarget {
        path: PathBuf,
        what: String,
    },
    /// The image is held by a process imgchain cannot ask to do the job: `what` says who and
    /// what to run instead.
    HeldElsewhere {
        path: PathBuf,
        what: String,
    },
    /// The image to remove is a disk of a defined libvirt VM, which could no longer start.
    VmDisk {
        path: PathBuf,
        domain: String,
        target: String,
        definition: PathBuf,
    },
    /// A live operation could not start through the holder's QMP socket or libvirt.
    Live {
        path: PathBuf,
        what: String,
    },
    /// The file to create exists already.
    Exists {
        path: PathBuf,
    },
    /// `what` ends with what to do about it, in words both surfaces share.
    Unsupported {
        path: PathBuf,
        what: String,
    },
    NoSpace {
        path: PathBuf,
        need: u64,
        free: u64,
    },
    Changed {
        path: PathBuf,
        what: String,
    },
    /// The images around the request could not be scanned; `what` names the path it could
    /// not read.
    Scan {
        path: PathBuf,
        what: String,
    },
    Open(OpenError),
    ReopenRw(Box<ReopenError>),
    /// A bug stopped the operation: it may have written part of the data.
    Internal {
        path: PathBuf,
        what: String,
    },
    /// A layer libvirt's snapshot metadata records, and libvirt cannot do the change (exit 13).
    Libvirt {
        path: PathBuf,
        what: String,
    },
    /// Marking what an operation writes in an image's persistent bitmaps failed: its data was
    /// not written (the bitmaps may mark more than changed, never less).
    Bitmaps {
        path: PathBuf,
        what: String,
    },
    /// The trust boundary (ARCHITECTURE.md §8): a file the images' owners could not touch.
    Untrusted {
        path: PathBuf,
        what: String,
    },
    /// Something in the trash cannot be restored or used as asked: `what` says why and what
    /// to do.
    Trash {
        path: PathBuf,
        what: String,
    },
    Map {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Any of the others, with a way forward its site knows (a flag the request could take,
    /// another operation that fits the image).
    With {
        refusal: Box<Refusal>,
        way: Way,
    },
}

/// What to do about a refusal, in each surface's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Way {
    /// In the CLI's words: its flags, or a command.
    pub cli: String,
    pub ui: UiWay,
}

/// What to do about a refusal in the UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UiWay {
    /// The key of the action of this `[keys]` name, then what it does (`u upgrades it…`); a
    /// `{key}` in the words puts the key there instead.
    Key(&'static str, String),
    /// Words of the UI's own.
    Words(String),
    /// The CLI's words serve (a shell command, plain advice).
    Same,
    /// Nothing the UI can offer: the fact alone.
    Nothing,
}

impl Way {
    /// Advice both surfaces word alike.
    pub fn same(text: impl Into<String>) -> Way {
        Way {
            cli: text.into(),
            ui: UiWay::Same,
        }
    }

    /// A flag in the CLI, the key of the action `key` in the UI.
    pub fn key(cli: impl Into<String>, key: &'static str, does: impl Into<String>) -> Way {
        Way {
            cli: cli.into(),
            ui: UiWay::Key(key, does.into()),
        }
    }

    /// Advice in the CLI only (a flag the UI has no counterpart of).
    pub fn cli_only(cli: impl Into<String>) -> Way {
        Way {
            cli: cli.into(),
            ui: UiWay::Nothing,
        }
    }

    /// The advice in the UI, with `key` naming an action's keys.
    fn ui(&self, key: &dyn Fn(&str) -> String) -> Option<String> {
        match &self.ui {
            UiWay::Key(action, does) if does.contains("{key}") => {
                Some(does.replace("{key}", &key(action)))
            }
            UiWay::Key(action, does) => Some(format!("{} {does}", key(action))),
            UiWay::Words(w) => Some(w.clone()),
            UiWay::Same => Some(self.cli.clone()),
            UiWay::Nothing => None,
        }
    }
}

/// `BASE has other overlays that would see their disk change: A, B`.
fn shared_fact(base: &Path, others: &[PathBuf]) -> String {
    format!(
        "{} has other overlays that would see their disk change: {}",
        base.shown(),
        list(others)
    )
}

/// `IMAGE has overlays built on it: A, B`.
fn overlays_fact(path: &Path, overlays: &[PathBuf]) -> String {
    format!(
        "{} has overlays built on it: {}",
        path.shown(),
        list(overlays)
    )
}

/// Which VM's disk the image is, and the command that detaches it.
fn vm_disk_fact(path: &Path, domain: &str, target: &str, definition: &Path) -> String {
    format!(
        "{} is disk {} of the libvirt VM {} (defined in {}); removing it leaves that VM unable \
         to start: detach it first (virsh detach-disk --domain {} {} --config)",
        path.shown(),
        target.shown(),
        domain.shown(),
        definition.shown(),
        domain.quoted(),
        target.quoted()
    )
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.shown().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an image must stay read-only.
fn keep_ro_fact(path: &Path, reason: KeepRoReason, by: Option<&PathBuf>) -> String {
    let why = match (reason, by) {
        (KeepRoReason::Inherited, Some(o)) => format!(
            "its overlay {} is protected, and writing it would change that overlay's disk",
            o.shown()
        ),
        (KeepRoReason::FileMode, _) => "its file mode says read-only (no write permission for \
                                        anyone), which imgchain keeps even as root"
            .to_string(),
        (KeepRoReason::Requested, _) => "it is protected".to_string(),
        (KeepRoReason::NotWritable, _) => "it cannot be opened read-write (permissions, \
                                           read-only filesystem or immutable flag)"
            .to_string(),
        (KeepRoReason::Inherited, None) => reason.describe().to_string(),
    };
    format!(
        "{} must stay read-only (keep-RO, {reason}): {why}",
        path.shown()
    )
}

/// How to lift a keep-RO.
fn keep_ro_way(path: &Path, reason: KeepRoReason, by: Option<&PathBuf>) -> Option<Way> {
    let chmod = |p: &Path| format!("chmod u+w {}", p.quoted());
    Some(match (reason, by) {
        (KeepRoReason::Inherited, Some(o)) => Way::key(
            format!(
                "unprotect {} first (drop its --protect or config glob, or {} if its file mode \
                 says read-only)",
                o.shown(),
                chmod(o)
            ),
            "protect",
            format!(
                "on {} lifts its protection until you quit ({} if its file mode says read-only)",
                o.shown(),
                chmod(o)
            ),
        ),
        (KeepRoReason::FileMode, _) => {
            Way::same(format!("if it may change, {} first", chmod(path)))
        }
        (KeepRoReason::Requested, _) => Way::key(
            "drop --read-only, its --protect or its config protect glob first",
            "protect",
            "on it lifts its protection until you quit (a rule's asks first)",
        ),
        (KeepRoReason::NotWritable, _) => Way::same("fix that first"),
        (KeepRoReason::Inherited, None) => return None,
    })
}

/// The refusal in the CLI's words: the fact, then what to do with its flags.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.way() {
            Some(w) => write!(f, "{}; {}", self.fact(), w.cli),
            None => f.write_str(&self.fact()),
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::Map { source, .. } => Some(source),
            Refusal::InUse(e) => e.source(),
            Refusal::With { refusal, .. } => refusal.source(),
            _ => None,
        }
    }
}

impl From<crate::trash::TrashError> for Refusal {
    fn from(e: crate::trash::TrashError) -> Refusal {
        Refusal::Trash {
            path: e.path,
            what: e.what,
        }
    }
}

impl From<LockError> for Refusal {
    fn from(e: LockError) -> Self {
        match e {
            e @ LockError::InUse { .. } => Refusal::InUse(e),
            other => Refusal::Open(OpenError::Lock(other)),
        }
    }
}

impl From<OpenError> for Refusal {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Lock(l) => l.into(),
            other => Refusal::Open(other),
        }
    }
}

impl Refusal {
    /// The process exit code (ARCHITECTURE.md §5).
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::With { refusal, .. } => refusal.exit_code(),
            Refusal::NoBacking { .. } => exit::NO_BACKING,
            Refusal::KeepReadOnly { .. } => exit::KEEP_READ_ONLY,
            Refusal::InUse(_) | Refusal::HeldElsewhere { .. } => exit::IN_USE,
            Refusal::SharedBase { .. }
            | Refusal::HasOverlays { .. }
            | Refusal::VmDisk { .. }
            | Refusal::Libvirt { .. } => exit::SHARED_BASE,
            Refusal::Exists { .. } | Refusal::BadTarget { .. } => exit::USAGE,
            Refusal::NoSpace { .. } => exit::NO_SPACE,
            Refusal::Untrusted { .. } => exit::UNTRUSTED,
            Refusal::Unsupported { .. } | Refusal::NeedsAmend { .. } => exit::UNSUPPORTED,
            Refusal::BaseNotInChain { .. } => exit::USAGE,
            Refusal::ReopenRw(r) if r.lock.is_some() => exit::IN_USE,
            Refusal::BrokenChain { .. }
            | Refusal::Changed { .. }
            | Refusal::Live { .. }
            | Refusal::Scan { .. }
            | Refusal::Open(_)
            | Refusal::ReopenRw(_)
            | Refusal::Internal { .. }
            | Refusal::Bitmaps { .. }
            | Refusal::Map { .. }
            | Refusal::Trash { .. } => exit::FAILURE,
        }
    }

    /// An operation's `--json` when it was refused or could not start: `fix` is what to do,
    /// in the CLI's words (null when nothing can be done from here).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "kind": self.kind(),
                "message": self.to_string(),
                "fix": self.way().map(|w| w.cli),
                "exit_code": self.exit_code(),
            }
        })
    }

    /// The refusal in the UI's words: the fact, then what to do with its keys (`key` names
    /// the keys of an action by its `[keys]` name).
    pub fn ui_text(&self, key: &dyn Fn(&str) -> String) -> String {
        let fact = self.fact();
        match self.way().and_then(|w| w.ui(key)) {
            Some(way) => format!("{fact}; {way}"),
            None => fact,
        }
    }

    /// What is wrong, naming the file, in words both surfaces share.
    pub fn fact(&self) -> String {
        match self {
            Refusal::NoBacking { top, op } => format!(
                "{} has no backing file, so there is nothing to {}",
                top.shown(),
                op.nothing_to()
            ),
            Refusal::BrokenChain { top, op, message } => {
                format!("{} cannot {}: {message}", top.shown(), op.refused_as())
            }
            Refusal::BaseNotInChain { top, base } => format!(
                "{} is not in the backing chain of {}",
                base.shown(),
                top.shown()
            ),
            Refusal::KeepReadOnly {
                path,
                reason,
                protected_by,
            } => keep_ro_fact(path, *reason, protected_by.as_ref()),
            Refusal::InUse(e) => e.to_string(),
            Refusal::SharedBase { base, others } => shared_fact(base, others),
            Refusal::HasOverlays { path, overlays } => format!(
                "{}; deleting it alone would leave them without their backing file",
                overlays_fact(path, overlays)
            ),
            Refusal::VmDisk {
                path,
                domain,
                target,
                definition,
            } => vm_disk_fact(path, domain, target, definition),
            Refusal::Live { path, what } => format!(
                "{}: the live operation could not start: {what}; nothing was changed",
                path.shown()
            ),
            Refusal::Exists { path } => format!("{} exists already", path.shown()),
            Refusal::NoSpace { path, need, free } => format!(
                "{} may need up to {} on its filesystem, which has only {} free",
                path.shown(),
                crate::units::human_size(*need),
                crate::units::human_size(*free)
            ),
            Refusal::Changed { path, what } => format!(
                "{} changed since it was scanned ({what}); scan again and retry",
                path.shown()
            ),
            Refusal::Scan { what, .. } => what.clone(),
            Refusal::Open(e) => e.to_string(),
            Refusal::ReopenRw(e) => format!("nothing was written: {e}"),
            Refusal::Internal { path, what } => format!(
                "imgchain stopped on an internal error ({what}); {} may hold part of the data and \
                 be marked dirty: check it with qemu-img check {} (and repair with -r all if it \
                 says so) before using it, and please report this",
                path.shown(),
                path.quoted()
            ),
            Refusal::Bitmaps { path, what } => format!(
                "{}: its persistent bitmaps could not be marked before the write, so nothing else \
                 was written ({what}); the bitmaps may mark more than changed; check the image \
                 with qemu-img check {}",
                path.shown(),
                path.quoted()
            ),
            Refusal::Map { path, source } => format!(
                "cannot read the allocation map of {}: {source}",
                path.shown()
            ),
            Refusal::NeedsAmend { path, what }
            | Refusal::BadTarget { path, what }
            | Refusal::HeldElsewhere { path, what }
            | Refusal::Unsupported { path, what }
            | Refusal::Libvirt { path, what }
            | Refusal::Untrusted { path, what }
            | Refusal::Trash { path, what } => format!("{} {what}", path.shown()),
            Refusal::With { refusal, .. } => refusal.fact(),
        }
    }

    /// What to do about it, in each surface's words (`None`: the fact says it all).
    pub fn way(&self) -> Option<Way> {
        match self {
            Refusal::BaseNotInChain { .. } => Some(Way::key(
                "name one of its backing images with -b",
                "deeper",
                "picks one of its backing images",
            )),
            Refusal::KeepReadOnly {
                path,
                reason,
                protected_by,
            } => keep_ro_way(path, *reason, protected_by.as_ref()),
            Refusal::SharedBase { .. } => Some(Way::key(
                "go on with --force only if they are disposable",
                "shared",
                "goes on, only if they are disposable",
            )),
            Refusal::HasOverlays { .. } => Some(Way::key(
                "delete them first, or all together with --with-overlays",
                "with_overlays",
                "deletes them too",
            )),
            Refusal::NeedsAmend { path, .. } => {
                let by_hand = format!(
                    "or convert it yourself: qemu-img amend -f qcow2 -o compat=1.1 {}",
                    path.quoted()
                );
                Some(Way::key(
                    format!("add --amend to have it upgraded to compat=1.1 first, {by_hand}"),
                    "amend",
                    format!("has it upgraded to compat=1.1 first, {by_hand}"),
                ))
            }
            Refusal::VmDisk { .. } => Some(Way::key(
                "or add --force if the VM is disposable",
                "anyway",
                "or {key} deletes it anyway if the VM is disposable",
            )),
            Refusal::Exists { .. } => Some(Way::key(
                "name another file, or remove it first",
                "rename",
                "names another file (or remove it first)",
            )),
            Refusal::NoSpace { .. } => Some(Way {
                cli: "free some space first, or add --force to try anyway (a run that fills the \
                      disk stops with every image consistent)"
                    .into(),
                ui: UiWay::Words("free some space first".into()),
            }),
            Refusal::With { way, .. } => Some(way.clone()),
            _ => None,
        }
    }

    /// This refusal with a way forward its site knows.
    pub fn with(self, way: Way) -> Refusal {
        Refusal::With {
            refusal: Box::new(self),
            way,
        }
    }

    /// A stable name for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::With { refusal, .. } => refusal.kind(),
            Refusal::NoBacking { .. } => "no-backing",
            Refusal::BrokenChain { .. } => "broken-chain",
            Refusal::BaseNotInChain { .. } => "base-not-in-chain",
            Refusal::KeepReadOnly { .. } => "keep-read-only",
            Refusal::InUse(_) | Refusal::HeldElsewhere { .. } => "in-use",
            Refusal::SharedBase { .. } => "shared-base",
            Refusal::HasOverlays { .. } => "has-overlays",
            Refusal::VmDisk { .. } => "vm-disk",
            Refusal::Exists { .. } => "exists",
            Refusal::Live { .. } => "live",
            Refusal::BadTarget { .. } => "bad-target",
            Refusal::Unsupported { .. } => "unsupported",
            Refusal::NeedsAmend { .. } => "needs-amend",
            Refusal::Changed { .. } => "changed",
            Refusal::NoSpace { .. } => "no-space",
            Refusal::Untrusted { .. } => "untrusted",
            Refusal::Scan { .. } => "scan",
            Refusal::Open(_) => "open",
            Refusal::ReopenRw(_) => "reopen-rw",
            Refusal::Internal { .. } => "internal",
            Refusal::Bitmaps { .. } => "bitmaps",
            Refusal::Libvirt { .. } => "libvirt-snapshot",
            Refusal::Map { .. } => "map",
            Refusal::Trash { .. } => "trash",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::file::OpenMode;
    use crate::image::handle::ReopenStep;

    /// One refusal of each kind, for every operation where the kind names one.
    fn every_refusal() -> Vec<Refusal> {
        let p = || PathBuf::from("/vm/web.qcow2");
        let what = || "is what it is".to_string();
        let ops = [
            OpKind::COMMIT,
            OpKind::SNAPSHOT,
            OpKind::DELETE,
            OpKind::REBASE,
            OpKind::FLATTEN,
            OpKind::MERGE,
        ];
        let mut all = Vec::new();
        for op in ops {
            all.push(Refusal::NoBacking { top: p(), op });
            let message = what();
            all.push(Refusal::BrokenChain {
                top: p(),
                op,
                message,
            });
            let bad = Refusal::BadTarget {
                path: p(),
                what: what(),
            };
            let way = Way::key(format!("{op} it without --live"), op.as_str(), "does it");
            all.push(bad.with(way));
        }
        for reason in [
            KeepRoReason::Requested,
            KeepRoReason::FileMode,
            KeepRoReason::Inherited,
            KeepRoReason::NotWritable,
        ] {
            let protected_by = Some(PathBuf::from("/vm/top.qcow2"));
            all.push(Refusal::KeepReadOnly {
                path: p(),
                reason,
                protected_by,
            });
        }
        let lock = || LockError::InUse {
            path: p(),
            holder: None,
            permission: "write",
            shared: false,
        };
        let io = || std::io::Error::other("boom");
        let reopen = ReopenError {
            path: p(),
            from: OpenMode::ReadOnly,
            to: OpenMode::ReadWrite,
            step: ReopenStep::Open,
            detail: what(),
            lock: None,
        };
        let (path, others) = (p(), vec![PathBuf::from("/vm/other.qcow2")]);
        all.extend([
            Refusal::BaseNotInChain {
                top: p(),
                base: p(),
            },
            Refusal::InUse(lock()),
            Refusal::SharedBase {
                base: p(),
                others: others.clone(),
            },
            Refusal::HasOverlays {
                path,
                overlays: others,
            },
            Refusal::NeedsAmend {
                path: p(),
                what: what(),
            },
            Refusal::HeldElsewhere {
                path: p(),
                what: what(),
            },
            Refusal::VmDisk {
                path: p(),
                domain: "web".into(),
                target: "vda".into(),
                definition: "/etc/libvirt/qemu/web.xml".into(),
            },
            Refusal::Live {
                path: p(),
                what: what(),
            },
            Refusal::Exists { path: p() },
            Refusal::Unsupported {
                path: p(),
                what: what(),
            },
            Refusal::NoSpace {
                path: p(),
                need: 1 << 30,
                free: 1 << 20,
            },
            Refusal::Changed {
                path: p(),
                what: what(),
            },
            Refusal::Scan {
                path: p(),
                what: what(),
            },
            Refusal::Open(OpenError::Io {
                path: p(),
                mode: OpenMode::ReadWrite,
                source: io(),
            }),
            Refusal::ReopenRw(Box::new(reopen)),
            Refusal::Internal {
                path: p(),
                what: what(),
            },
            Refusal::Libvirt {
                path: p(),
                what: what(),
            },
            Refusal::Bitmaps {
                path: p(),
                what: what(),
            },
            Refusal::Untrusted {
                path: p(),
                what: what(),
            },
            Refusal::Map {
                path: p(),
                source: io(),
            },
            Refusal::Trash {
                path: p(),
                what: what(),
            },
            Refusal::BadTarget {
                path: p(),
                what: what(),
            }
            .with(Way::cli_only("add -F raw")),
        ]);
        all
    }

    /// `text` without the shell commands it quotes (their flags are the commands', the same
    /// on every surface) and the options imgchain is started with.
    fn outside_commands(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = ["qemu-img ", "virsh ", "chmod ", "imgchain with "]
            .iter()
            .filter_map(|c| rest.find(c))
            .min()
        {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            let end = rest.find([')', ';']).unwrap_or(rest.len());
            rest = &rest[end..];
        }
        out + rest
    }

    fn names_a_flag(text: &str) -> bool {
        text.split_whitespace().any(|w| {
            let w = w.trim_start_matches(['(', '"']);
            w.starts_with("--") || (w.len() == 2 && w.starts_with('-') && w != "--")
        })
    }

    #[test]
    fn each_surface_names_only_its_own_keys_and_flags() {
        let key = |name: &str| format!("⟨{name}⟩");
        let names: Vec<&str> = crate::actions::ACTIONS.iter().map(|d| d.name).collect();
        for r in every_refusal() {
            let cli = r.to_string();
            let ui = r.ui_text(&key);
            assert!(
                !cli.contains('⟨') && !cli.contains("in the UI"),
                "CLI: {cli}"
            );
            assert!(
                !names_a_flag(&outside_commands(&ui)),
                "UI names a flag: {ui}"
            );
            for k in ui.split('⟨').skip(1).filter_map(|s| s.split_once('⟩')) {
                assert!(names.contains(&k.0), "UI names no action {:?}: {ui}", k.0);
            }
            assert!(
                cli.starts_with(&r.fact()) && ui.starts_with(&r.fact()),
                "{cli}"
            );
            let json = r.json();
            assert_eq!(
                json["error"]["fix"].as_str(),
                r.way().map(|w| w.cli).as_deref()
            );
        }
    }

    #[test]
    fn a_refusal_with_a_way_keeps_its_kind_and_code() {
        let bad = Refusal::BadTarget {
            path: "/x".into(),
            what: "is x".into(),
        };
        let with = Refusal::BadTarget {
            path: "/x".into(),
            what: "is x".into(),
        }
        .with(Way::key("add --y", "merge", "merges it"));
        assert_eq!(with.kind(), bad.kind());
        assert_eq!(with.exit_code(), bad.exit_code());
        assert_eq!(with.to_string(), "/x is x; add --y");
        assert_eq!(
            with.ui_text(&|n| format!("<{n}>")),
            "/x is x; <merge> merges it"
        );
    }
}
