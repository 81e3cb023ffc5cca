//! The command line itself: exit codes in `--help`, typos of commands, long forms of flags,
//! shell completions and man pages.

mod common;

use std::process::Command;

use common::*;

/// Every `pub const NAME: u8 = N;` of src/exit.rs.
fn exit_codes_in_source() -> Vec<u8> {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/exit.rs"))
        .expect("src/exit.rs");
    src.lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter_map(|l| l.split_once(": u8 = "))
        .map(|(_, n)| n.trim_end_matches(';').parse().expect("a code"))
        .collect()
}

#[test]
fn help_lists_every_exit_code() {
    let out = imgchain_ok(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    let list = help
        .split_once("Exit codes: ")
        .map(|(_, l)| l.replace('\n', " "))
        .expect("an exit code list");
    let listed: Vec<u8> = list
        .split("; ")
        .map(|item| item.split(' ').next().unwrap_or("").trim().parse().unwrap())
        .collect();
    let mut codes = exit_codes_in_source();
    codes.sort_unstable();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, codes, "{list}");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md")
        .replace('\n', " ");
    for c in codes.iter().filter(|&&c| c != 0) {
        assert!(
            readme.contains(&format!(" {c} ")),
            "README's list lacks {c}"
        );
    }
}

#[test]
fn a_mistyped_command_is_named_and_nothing_is_opened() {
    let dir = tempdir();
    for (typed, meant) in [
        ("comit", "commit"),
        ("flaten", "flatten"),
        ("complet", "completions"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_imgchain"))
            .current_dir(dir.path())
            .args([typed, "x.qcow2"])
            .output()
            .expect("imgchain");
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(
            said.contains(&format!("did you mean imgchain {meant}?")),
            "{said}"
        );
    }
    // A path that does not exist and looks like no command: said as it is.
    let out = Command::new(env!("CARGO_BIN_EXE_imgchain"))
        .current_dir(dir.path())
        .arg("vm-disks")
        .output()
        .expect("imgchain");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("cannot scan") && !said.contains("did you mean"),
        "{said}"
    );
}

#[test]
fn every_short_flag_has_a_long_form() {
    for (cmd, longs) in [
        ("commit", &["--base", "--keep-top", "--progress"][..]),
        (
            "rebase",
            &["--backing", "--backing-format", "--unsafe", "--progress"][..],
        ),
        ("flatten", &["--progress"][..]),
        ("merge", &["--progress"][..]),
    ] {
        let out = imgchain_ok(&[cmd, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        for l in longs {
            assert!(help.contains(l), "{cmd} --help lacks {l}: {help}");
        }
        assert!(help.contains("Global options:"), "{cmd}: {help}");
        // Each global option once, under its own heading.
        assert_eq!(help.matches("--read-only").count(), 1, "{help}");
    }
}

/// `imgchain completions SHELL` parses in that shell.
fn completes_in(shell: &str, check: &[&str]) {
    let out = imgchain_ok(&["completions", shell]);
    let dir = tempdir();
    let script = dir.path().join(format!("imgchain.{shell}"));
    std::fs::write(&script, &out.stdout).expect("write");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("merge"),
        "{shell}"
    );
    run(Command::new(shell).args(check).arg(&script));
}

#[test]
#[cfg_attr(not(tool_bash), ignore = "needs bash")]
fn bash_completions_parse() {
    completes_in("bash", &["-n"]);
}

#[test]
#[cfg_attr(not(tool_zsh), ignore = "needs zsh")]
fn zsh_completions_parse() {
    completes_in("zsh", &["-n"]);
}

#[test]
#[cfg_attr(not(tool_fish), ignore = "needs fish")]
fn fish_completions_parse() {
    completes_in("fish", &["--no-execute"]);
}

#[test]
#[cfg_attr(not(tool_groff), ignore = "needs groff")]
fn the_man_pages_render() {
    let dir = tempdir();
    imgchain_ok(&["man", "--dir", arg(dir.path())]);
    for page in [
        "imgchain.1",
        "imgchain-commit.1",
        "imgchain-merge.1",
        "imgchain-man.1",
    ] {
        let path = dir.path().join(page);
        let out = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(&path));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("SYNOPSIS") || text.contains("S\u{8}SY"),
            "{page}: {text}"
        );
    }
    let one = imgchain_ok(&["man", "commit"]);
    assert_eq!(
        one.stdout,
        std::fs::read(dir.path().join("imgchain-commit.1")).unwrap()
    );
    let out = imgchain(&["man", "comit"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The JSON contract (ARCHITECTURE.md §5), checked on every document the CLI prints without
/// a running VM: each has `version` 1 and the fields the contract promises it, and every key
/// at any depth is one §5 names, so a field added without documenting it fails here.
#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn every_json_document_keeps_the_documented_contract() {
    let dry = [
        "operation",
        "dry_run",
        "image",
        "would",
        "lines",
        "space",
        "space_bytes",
    ];
    let ran = ["exit_code", "summary"];
    let refused = ["error"];
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (vec!["tree", "--json", "."], 0, vec!["roots", "nodes"]),
        (
            vec!["info", "--json", "mid.qcow2"],
            0,
            vec!["path", "mode", "backing", "bitmaps"],
        ),
        (vec!["check", "--json", "."], 0, vec![]),
        (
            vec!["commit", "--dry-run", "--json", "top.qcow2"],
            0,
            dry.to_vec(),
        ),
        (
            vec!["snapshot", "--dry-run", "--json", "top.qcow2"],
            0,
            dry.to_vec(),
        ),
        (
            vec!["delete", "--dry-run", "--json", "top.qcow2"],
            0,
            dry.to_vec(),
        ),
        (
            vec![
                "rebase",
                "--dry-run",
                "--json",
                "-b",
                "base.qcow2",
                "top.qcow2",
            ],
            0,
            dry.to_vec(),
        ),
        (
            vec!["flatten", "--dry-run", "--json", "top.qcow2"],
            0,
            dry.to_vec(),
        ),
        (
            vec!["merge", "--dry-run", "--json", "mid.qcow2"],
            0,
            dry.to_vec(),
        ),
        (vec!["commit", "--json", "base.qcow2"], 10, refused.to_vec()),
        (
            vec!["commit", "--json", "top.qcow2"],
            0,
            [&ran[..], &["copied_bytes", "reopen"]].concat(),
        ),
        (
            vec!["snapshot", "--json", "top.qcow2"],
            0,
            [&ran[..], &["new", "backing"]].concat(),
        ),
        (
            vec!["delete", "--json", "--yes", "top.qcow2"],
            0,
            [&ran[..], &["deleted"]].concat(),
        ),
        (
            vec!["rebase", "--json", "-b", "base.qcow2", "top.qcow2"],
            0,
            [&ran[..], &["safe"]].concat(),
        ),
        (
            vec!["flatten", "--json", "top.qcow2"],
            0,
            [&ran[..], &["copied_bytes"]].concat(),
        ),
        (
            vec!["merge", "--json", "--yes", "mid.qcow2"],
            0,
            [&ran[..], &["relinked"]].concat(),
        ),
    ];
    for (args, code, fields) in cases {
        let t = tempdir();
        let d = t.path();
        Chain::new(d, "16M")
            .base("base.qcow2")
            .on("mid.qcow2")
            .on("top.qcow2");
        qemu_io(&d.join("mid.qcow2"), "write -P 0x11 0 1M");
        qemu_io(&d.join("top.qcow2"), "write -P 0x22 1M 1M");
        let paths: Vec<String> = args
            .iter()
            .map(|a| match *a {
                "." => d.display().to_string(),
                a if a.ends_with(".qcow2") => d.join(a).display().to_string(),
                a => a.to_string(),
            })
            .collect();
        let out = imgchain(&paths.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON: {e}"));
        assert_eq!(v["version"], 1, "{args:?}: {v}");
        for f in fields {
            assert!(v.get(f).is_some(), "{args:?} lacks `{f}`: {v}");
        }
        assert_documented(&v, &format!("{args:?}"));
    }
}

/// Without a terminal to ask on, delete and merge go on only with --yes: a script that forgot
/// it gets a usage error that names the flag, and nothing changes.
#[test]
#[cfg_attr(not(tool_qemu_img), ignore = "needs qemu-img")]
fn delete_and_merge_without_a_terminal_need_yes() {
    let t = tempdir();
    let d = t.path();
    Chain::new(d, "16M")
        .base("base.qcow2")
        .on("mid.qcow2")
        .on("top.qcow2");
    let before = snapshot(d);
    for args in [["delete", "top.qcow2"], ["merge", "mid.qcow2"]] {
        let path = d.join(args[1]);
        let out = imgchain(&[args[0], arg(&path)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("add --yes"), "{args:?}: {err}");
        assert!(before == snapshot(d), "{args:?} changed something");
    }
    imgchain_ok(&["delete", "--yes", arg(&d.join("top.qcow2"))]);
    assert!(!d.join("top.qcow2").exists());
}
