//! Which operation a job runs, and the words each is named with.

use std::fmt;

/// Which operation a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Commit,
    Snapshot,
    Delete,
    Rebase,
    Flatten,
    Merge,
}

impl OpKind {
    /// The name in progress output and JSON (`commit`).
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Commit => "commit",
            OpKind::Snapshot => "snapshot",
            OpKind::Delete => "delete",
            OpKind::Rebase => "rebase",
            OpKind::Flatten => "flatten",
            OpKind::Merge => "merge",
        }
    }
}

impl OpKind {
    /// The name in titles: "Commit", "Snapshot".
    pub fn title(self) -> &'static str {
        match self {
            OpKind::Commit => "Commit",
            OpKind::Snapshot => "Snapshot",
            OpKind::Delete => "Delete",
            OpKind::Rebase => "Rebase",
            OpKind::Flatten => "Flatten",
            OpKind::Merge => "Merge",
        }
    }

    /// What the image of a refused request cannot do: "be committed", "take an overlay".
    pub fn refused_as(self) -> &'static str {
        match self {
            OpKind::Commit => "be committed",
            OpKind::Snapshot => "take an overlay",
            OpKind::Delete => "be deleted",
            OpKind::Rebase => "be rebased",
            OpKind::Flatten => "be flattened",
            OpKind::Merge => "be merged",
        }
    }

    /// What an image without a backing file gives this operation nothing to do: "commit it
    /// into", "flatten".
    pub fn nothing_to(self) -> &'static str {
        match self {
            OpKind::Commit => "commit it into",
            OpKind::Merge => "merge it into",
            OpKind::Flatten => "flatten (it is independent already)",
            _ => "do with it",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
