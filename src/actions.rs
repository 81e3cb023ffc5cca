//! The one table of UI actions: each action's `[keys]` name, help text and status-line hint.
//! The config's validation, the keymap, the help screen and the hints derive from [`ACTIONS`];
//! an action's default keys are its line in `[keys]` of the embedded `config.toml`, the one
//! place defaults are written. Adding an action is an entry here, that line, and its handler.

/// Everything a key can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Up,
    Down,
    Fold,
    Unfold,
    First,
    Last,
    PageUp,
    PageDown,
    Backing,
    Overlay,
    NextProblem,
    PrevProblem,
    Filter,
    Sort,
    Details,
    Zoom,
    Commit,
    Snapshot,
    Merge,
    Flatten,
    Rebase,
    Delete,
    Repair,
    Live,
    Undo,
    Clean,
    Protect,
    Cancel,
    Rescan,
    Help,
    Messages,
    Quit,
    Confirm,
    Close,
    Shared,
    KeepTop,
    Deeper,
    Next,
    Prev,
    WithOverlays,
    Anyway,
    Amend,
    Pick,
    Rename,
}

/// Where an action's keys work: keys of one place may not repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The forest, with no dialog open.
    Browse,
    /// A dialog: confirm or close it, or change what it asks.
    Dialog,
}

/// One row of the table.
#[derive(Debug)]
pub struct ActionDef {
    pub action: Action,
    /// Its entry in the config's `[keys]` table.
    pub name: &'static str,
    /// What the help screen says.
    pub description: &'static str,
    /// Its place and word among the status line's key hints (lowest first); `None`: not
    /// hinted.
    pub hint: Option<(u8, &'static str)>,
    pub place: Place,
}

const fn def(
    action: Action,
    name: &'static str,
    description: &'static str,
    hint: Option<(u8, &'static str)>,
    place: Place,
) -> ActionDef {
    ActionDef {
        action,
        name,
        description,
        hint,
        place,
    }
}

use Place::{Browse, Dialog};

/// Every action, in help order.
pub const ACTIONS: [ActionDef; 44] = [
    def(Action::Up, "up", "move up", None, Browse),
    def(Action::Down, "down", "move down", None, Browse),
    def(
        Action::Fold,
        "fold",
        "fold the overlays (on a leaf: go to its backing image)",
        None,
        Browse,
    ),
    def(
        Action::Unfold,
        "unfold",
        "unfold the overlays",
        None,
        Browse,
    ),
    def(
        Action::First,
        "first",
        "go to the first image",
        None,
        Browse,
    ),
    def(Action::Last, "last", "go to the last image", None, Browse),
    def(Action::PageUp, "page_up", "one page up", None, Browse),
    def(Action::PageDown, "page_down", "one page down", None, Browse),
    def(
        Action::Backing,
        "backing",
        "jump to the backing image",
        None,
        Browse,
    ),
    def(
        Action::Overlay,
        "overlay",
        "jump to the first overlay",
        None,
        Browse,
    ),
    def(
        Action::NextProblem,
        "next_problem",
        "jump to the next image with a problem",
        None,
        Browse,
    ),
    def(
        Action::PrevProblem,
        "prev_problem",
        "jump to the previous image with a problem",
        None,
        Browse,
    ),
    def(
        Action::Filter,
        "filter",
        "filter (text, is:problem/inuse/orphan, mode:, fmt:, size:>10G)",
        Some((4, "filter")),
        Browse,
    ),
    def(
        Action::Sort,
        "sort",
        "sort roots and siblings: name, size on disk, modified, problems first",
        None,
        Browse,
    ),
    def(
        Action::Details,
        "details",
        "move the keys to the details pane and back (there j/k and PageUp/PageDown scroll)",
        None,
        Browse,
    ),
    def(
        Action::Zoom,
        "zoom",
        "show the details pane on the whole screen, or not",
        None,
        Browse,
    ),
    def(
        Action::Commit,
        "commit",
        "commit the selected overlay into its backing image",
        Some((1, "commit")),
        Browse,
    ),
    def(
        Action::Snapshot,
        "snapshot",
        "new qcow2 overlay on the selected image",
        Some((6, "snapshot")),
        Browse,
    ),
    def(
        Action::Merge,
        "merge",
        "merge the selected middle layer away",
        Some((7, "merge")),
        Browse,
    ),
    def(
        Action::Flatten,
        "flatten",
        "make the selected image independent",
        None,
        Browse,
    ),
    def(
        Action::Rebase,
        "rebase",
        "rebase onto an image further down",
        None,
        Browse,
    ),
    def(
        Action::Delete,
        "delete",
        "delete the selected image (asks twice, or its name)",
        None,
        Browse,
    ),
    def(
        Action::Repair,
        "repair",
        "point an image with a missing backing file at a candidate",
        None,
        Browse,
    ),
    def(
        Action::Live,
        "live",
        "live commit or merge, done by the VM that holds the image",
        None,
        Browse,
    ),
    def(
        Action::Undo,
        "undo",
        "put back the images of the last commit, merge, flatten or rebase here (XFS, btrfs)",
        None,
        Browse,
    ),
    def(
        Action::Clean,
        "clean",
        "what the scanned paths could free: leftovers, unused images, duplicates, the trash",
        None,
        Browse,
    ),
    def(
        Action::Protect,
        "protect",
        "toggle keep-RO (protect) on the selected image until quit",
        Some((3, "protect")),
        Browse,
    ),
    def(
        Action::Cancel,
        "cancel",
        "cancel the running commit",
        Some((5, "cancel")),
        Browse,
    ),
    def(
        Action::Rescan,
        "rescan",
        "scan the paths again",
        None,
        Browse,
    ),
    def(
        Action::Help,
        "help",
        "show or hide this help",
        Some((0, "help")),
        Browse,
    ),
    def(
        Action::Messages,
        "messages",
        "show the messages of this session in full, newest first",
        None,
        Browse,
    ),
    def(
        Action::Quit,
        "quit",
        "quit (a running commit is cancelled and cleaned up first)",
        Some((2, "quit")),
        Browse,
    ),
    def(
        Action::Confirm,
        "confirm",
        "in a dialog: confirm",
        None,
        Dialog,
    ),
    def(Action::Close, "close", "in a dialog: close", None, Dialog),
    def(
        Action::Shared,
        "shared",
        "in the commit dialog: commit into a base other images are built on (confirm never does)",
        None,
        Dialog,
    ),
    def(
        Action::KeepTop,
        "keep_top",
        "in the commit dialog: keep the top's data, or empty it",
        None,
        Dialog,
    ),
    def(
        Action::Deeper,
        "deeper",
        "in the commit and rebase dialogs: an image further down the chain (after the last, \
         back up)",
        None,
        Dialog,
    ),
    def(
        Action::Next,
        "next",
        "in a dialog with a list (repair): the next choice",
        None,
        Dialog,
    ),
    def(
        Action::Prev,
        "prev",
        "in a dialog with a list (repair): the previous choice",
        None,
        Dialog,
    ),
    def(
        Action::WithOverlays,
        "with_overlays",
        "in the delete dialog: delete the images built on it too",
        None,
        Dialog,
    ),
    def(
        Action::Anyway,
        "anyway",
        "in the delete dialog: delete a stopped VM's disk anyway (the VM loses it)",
        None,
        Dialog,
    ),
    def(
        Action::Amend,
        "amend",
        "in the commit, merge, flatten and rebase dialogs: upgrade the qcow2 v2 image written \
         to compat=1.1 first (qemu-img amend), or not",
        None,
        Dialog,
    ),
    def(
        Action::Pick,
        "pick",
        "in the rebase dialog: pick the new backing file among every image found (type to \
         filter, the arrows move, Enter picks)",
        None,
        Dialog,
    ),
    def(
        Action::Rename,
        "rename",
        "in the snapshot dialog: edit the new overlay's file name (Enter keeps it, Esc not)",
        None,
        Dialog,
    ),
];

impl Action {
    /// This action's row.
    pub fn def(self) -> &'static ActionDef {
        ACTIONS
            .iter()
            .find(|d| d.action == self)
            .unwrap_or(&ACTIONS[0])
    }

    /// The action a `[keys]` entry of this name binds.
    pub fn named(name: &str) -> Option<Action> {
        ACTIONS.iter().find(|d| d.name == name).map(|d| d.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_one_row_and_a_unique_name() {
        for d in &ACTIONS {
            assert_eq!(d.action.def().name, d.name);
            assert_eq!(Action::named(d.name), Some(d.action));
            assert_eq!(ACTIONS.iter().filter(|o| o.name == d.name).count(), 1);
        }
    }
}
