//! What every subcommand is: its arguments and how it runs (the registry is `commands!` in
//! the module above).

use super::failure::Failure;
use super::session::Session;

/// One subcommand: its arguments (clap's `Args`) and how it runs.
pub(crate) trait Command: clap::Args {
    /// Its name when it would change something on disk (`None`: it only reads, or is a dry
    /// run); `--read-only` refuses it.
    fn writing(&self) -> Option<&'static str> {
        None
    }

    fn run(self, ctx: &Session) -> Result<u8, Failure>;
}
