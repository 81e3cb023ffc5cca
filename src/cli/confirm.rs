//! The CLI's confirmation before an operation removes files (`delete`, `merge`): on a
//! terminal it shows the plan and asks; `--yes` answers for scripts; without a terminal and
//! without `--yes` it refuses, so a pipe never deletes by default (ARCHITECTURE.md §5).

use std::io::{BufRead, IsTerminal, Write};

use imgchain::ops::Description;

use super::failure::{Failure, usage};

/// What the user is asked before files go.
pub(crate) enum Question {
    /// `y` or `yes` confirms.
    YesNo(String),
    /// The file name must be typed, as GitHub asks before deleting a repository: for an image
    /// that holds data of its own.
    TypeName { prompt: String, name: String },
}

/// Whether to go on: `yes` (the flag) goes on; on a terminal, the plan `d` is shown and the
/// answer decides; with no terminal, a usage error that names `--yes`.
pub(crate) fn confirmed(
    command: &str,
    d: &Description,
    q: &Question,
    yes: bool,
) -> Result<bool, Failure> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(anyhow::anyhow!(
            "imgchain {command} removes files and asks first, but there is no terminal to ask \
             on: add --yes to go on (--dry-run shows what it would do)"
        )));
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", d.would);
    for line in d.plain() {
        let _ = writeln!(err, "{line}");
    }
    let _ = writeln!(err);
    let prompt = match q {
        Question::YesNo(p) => format!("{p} [y/N] "),
        Question::TypeName { prompt, name } => format!("{prompt} Type {name} to confirm: "),
    };
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(anyhow::Error::from)?;
    let answer = answer.trim();
    Ok(match q {
        Question::YesNo(_) => matches!(answer.to_lowercase().as_str(), "y" | "yes"),
        Question::TypeName { name, .. } => answer == name,
    })
}
