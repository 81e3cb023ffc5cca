//! `imgchain undo`: put back the images of the last commit, merge, flatten or rebase under a
//! path, from the clones made before it wrote (ARCHITECTURE.md §3, "Undo").

use std::path::PathBuf;

use clap::Args;

use imgchain::exit;
use imgchain::ops::Operation;
use imgchain::ops::undo::{self, UndoOp};

use super::command::Command;
use super::failure::Failure;
use super::runner::{refused, run_planned};
use super::session::{Session, print_json};

#[derive(Args)]
pub(crate) struct UndoArgs {
    /// Print what would be put back, and change nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// A directory or an image whose directory holds the undo record [default: .]
    pub(crate) path: Option<PathBuf>,
}

impl Command for UndoArgs {
    fn writing(&self) -> Option<&'static str> {
        (!self.dry_run).then_some("undo")
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        let paths: Vec<PathBuf> = self.path.into_iter().collect();
        let dirs = super::trash::trash_dirs(ctx, &paths)?;
        let plan = match undo::plan(&dirs) {
            Ok(p) => p,
            Err(e) => return Ok(refused(&e, self.json)),
        };
        if !self.dry_run {
            return run_planned::<UndoOp>(ctx, &plan, false, self.json);
        }
        let d = UndoOp::describe(&plan);
        if self.json {
            print_json(&serde_json::json!({
                "operation": "undo",
                "dry_run": true,
                "would": d.would,
                "lines": d.plain(),
                "exit_code": exit::OK,
                "summary": d.would,
            }))?;
        } else {
            println!("{}", d.would);
            for line in d.plain() {
                println!("{line}");
            }
        }
        Ok(exit::OK)
    }
}
