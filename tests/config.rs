//! Configuration files: every bad file in tests/invalid_configs/ gives exit 2 with the file,
//! the line and its own message; a good partial file is accepted.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn invalid_configs_name_file_line_and_key() {
    let empty = tempdir();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks a '# expect: ' first line", path.display()));
        let before = std::fs::read(&path).unwrap();
        let out = imgchain(&[
            "--config",
            path.to_str().unwrap(),
            "tree",
            empty.path().to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
        assert!(
            err.contains(path.to_str().unwrap()),
            "names the file: {err}"
        );
        assert!(
            err.contains(expect),
            "{}: wanted {expect:?} in {err}",
            path.display()
        );
        assert!(err.contains("line "), "names the line: {err}");
        assert!(out.stdout.is_empty(), "prints nothing else");
        assert_eq!(before, std::fs::read(&path).unwrap());
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} invalid configs");
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let out = imgchain(&["--config", "/nonexistent/imgchain.toml", "tree", "/tmp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/imgchain.toml"));
}

#[test]
fn the_shipped_config_is_accepted() {
    let empty = tempdir();
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let out = imgchain(&[
        "--config",
        cfg.to_str().unwrap(),
        "tree",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn xdg_config_is_found() {
    let home = tempdir();
    let cfg = home.path().join("imgchain");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("config.toml"), "[scan]\nmax_depth = \"x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgchain"))
        .args(["tree", home.path().to_str().unwrap()])
        .env("XDG_CONFIG_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("imgchain/config.toml"));
}
