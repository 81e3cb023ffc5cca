//! `imgchain completions SHELL` and `imgchain man`: made from the command line itself, so they
//! never drift from `--help`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use imgchain::exit;
use imgchain::text::Names;

use super::command::Command;
use super::failure::Failure;
use super::session::Session;

#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in: bash, zsh, fish, elvish or powershell
    pub(crate) shell: clap_complete::Shell,
}

impl Command for CompletionsArgs {
    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        let mut cmd = (ctx.cli)();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut cmd, "imgchain", &mut out);
        std::io::stdout()
            .write_all(&out)
            .context("cannot write the completions")?;
        Ok(exit::OK)
    }
}

#[derive(Args)]
pub(crate) struct ManArgs {
    /// The page of one command (imgchain-COMMAND(1)); default: imgchain(1)
    #[arg(value_name = "COMMAND", conflicts_with = "dir")]
    pub(crate) command: Option<String>,
    /// Write every page (imgchain.1 and imgchain-COMMAND.1) into DIR instead, e.g.
    /// /usr/local/share/man/man1
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

impl Command for ManArgs {
    fn run(self, ctx: &Session) -> Result<u8, Failure> {
        let pages = pages((ctx.cli)());
        if let Some(dir) = &self.dir {
            for (name, page) in &pages {
                let path = dir.join(format!("{name}.1"));
                // Never through a symlink someone left under that name.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&path)
                    .and_then(|mut f| f.write_all(page))
                    .with_context(|| format!("cannot write {}", path.shown()))?;
            }
            return Ok(exit::OK);
        }
        let wanted = match &self.command {
            Some(c) => format!("imgchain-{c}"),
            None => "imgchain".into(),
        };
        let Some((_, page)) = pages.iter().find(|(n, _)| *n == wanted) else {
            return Err(super::failure::usage(anyhow::anyhow!(
                "imgchain has no command {:?}; imgchain --help lists them",
                self.command.unwrap_or_default()
            )));
        };
        std::io::stdout()
            .write_all(page)
            .context("cannot write the page")?;
        Ok(exit::OK)
    }
}

/// Every man page, by name: imgchain's, then one per command.
fn pages(mut cmd: clap::Command) -> Vec<(String, Vec<u8>)> {
    cmd.build();
    let mut pages = Vec::new();
    let mut render = |name: String, c: clap::Command| {
        let mut page = Vec::new();
        // Rendering into memory cannot fail.
        let _ = clap_mangen::Man::new(c).render(&mut page);
        pages.push((name, page));
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("imgchain-{}", sub.get_name());
        render(name.clone(), sub.clone().name(name));
    }
    render("imgchain".into(), cmd);
    pages.rotate_right(1);
    pages
}
