//! What a plan will do, in the words the UI's dialog and the CLI's dry run both show
//! (ARCHITECTURE.md §3): each operation describes its own plan once.

/// One line of a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Said {
    /// A name and its value: `into  /srv/base.qcow2`.
    Field(&'static str, String),
    /// A sentence of its own.
    Text(String),
    /// One entry of the list the sentence before it opens.
    Item(String),
    /// What the user loses by going on (shown as a problem).
    Warning(String),
    /// An empty line.
    Gap,
}

/// A plan in words: one sentence for a dry run, and the lines a dialog shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// What a dry run would do, in one sentence ("Would delete …").
    pub would: String,
    /// The plan, line by line.
    pub lines: Vec<Said>,
}

impl Description {
    /// A description that opens with `would`.
    pub fn new(would: String) -> Description {
        Description {
            would,
            lines: Vec::new(),
        }
    }

    /// Adds a field.
    pub fn field(&mut self, key: &'static str, value: impl Into<String>) -> &mut Self {
        self.lines.push(Said::Field(key, value.into()));
        self
    }

    /// Adds a sentence after an empty line.
    pub fn text(&mut self, text: impl Into<String>) -> &mut Self {
        self.lines.push(Said::Gap);
        self.lines.push(Said::Text(text.into()));
        self
    }

    /// Adds a sentence right under the line before.
    pub fn then(&mut self, text: impl Into<String>) -> &mut Self {
        self.lines.push(Said::Text(text.into()));
        self
    }

    /// Adds an entry of a list.
    pub fn item(&mut self, item: impl Into<String>) -> &mut Self {
        self.lines.push(Said::Item(item.into()));
        self
    }

    /// Adds a warning.
    pub fn warning(&mut self, text: impl Into<String>) -> &mut Self {
        self.lines.push(Said::Warning(text.into()));
        self
    }

    /// The lines as plain text, one per line: fields padded to a column, items indented.
    pub fn plain(&self) -> Vec<String> {
        self.lines.iter().map(Said::plain).collect()
    }
}

impl Said {
    /// The line as plain text.
    pub fn plain(&self) -> String {
        match self {
            Said::Field(k, v) => format!("{k:<12}{v}"),
            Said::Text(t) | Said::Warning(t) => t.clone(),
            Said::Item(i) => format!("  {i}"),
            Said::Gap => String::new(),
        }
    }
}
