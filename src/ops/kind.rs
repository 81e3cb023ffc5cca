//! The words an operation is named with. An operation defines its own as
//! [`Operation::KIND`](super::Operation::KIND); the ones other operations refer to are here.

use std::fmt;

/// Which operation a job runs, and the words each is named with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpKind {
    name: &'static str,
    title: &'static str,
    refused_as: &'static str,
    nothing_to: &'static str,
}

impl OpKind {
    /// An operation named `name` ("resize") in progress and JSON, `title` ("Resize") in
    /// titles, whose refused image cannot `refused_as` ("be resized").
    pub const fn new(name: &'static str, title: &'static str, refused_as: &'static str) -> Self {
        OpKind {
            name,
            title,
            refused_as,
            nothing_to: "do with it",
        }
    }

    /// The same, with what an image without a backing file gives it nothing to do.
    pub const fn with_nothing_to(self, nothing_to: &'static str) -> Self {
        OpKind { nothing_to, ..self }
    }

    pub const COMMIT: OpKind =
        OpKind::new("commit", "Commit", "be committed").with_nothing_to("commit it into");
    pub const SNAPSHOT: OpKind = OpKind::new("snapshot", "Snapshot", "take an overlay");
    pub const DELETE: OpKind = OpKind::new("delete", "Delete", "be deleted");
    pub const REBASE: OpKind = OpKind::new("rebase", "Rebase", "be rebased");
    pub const FLATTEN: OpKind = OpKind::new("flatten", "Flatten", "be flattened")
        .with_nothing_to("flatten (it is independent already)");
    pub const UNDO: OpKind = OpKind::new("undo", "Undo", "be undone");
    pub const MERGE: OpKind =
        OpKind::new("merge", "Merge", "be merged").with_nothing_to("merge it into");

    /// The name in progress output and JSON (`commit`).
    pub const fn as_str(self) -> &'static str {
        self.name
    }

    /// The name in titles: "Commit", "Snapshot".
    pub const fn title(self) -> &'static str {
        self.title
    }

    /// What the image of a refused request cannot do: "be committed", "take an overlay".
    pub fn refused_as(self) -> &'static str {
        self.refused_as
    }

    /// What an image without a backing file gives this operation nothing to do: "commit it
    /// into", "flatten".
    pub fn nothing_to(self) -> &'static str {
        self.nothing_to
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}
