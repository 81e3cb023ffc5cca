//! Names from disk in output: escaping leaves no raw control byte, and quoting round-trips
//! through a real shell (ARCHITECTURE.md §8).

use std::process::Command;

use imgchain::text::{escape_bytes, quote_bytes};
use proptest::prelude::*;

fn is_raw_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Bytes a file name can hold (anything but NUL), biased towards the interesting ones.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            1u8..=255,
            prop::sample::select(b"\x1b\n\r\t\x07'\"$`\\ ;&|()<>*?[]{}~!#".to_vec()),
            prop::sample::select(vec![0xe2u8, 0x80, 0xae, 0xc2, 0x85]),
        ],
        0..24,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn escaped_and_quoted_names_hold_no_raw_control_character(n in name()) {
        let e = escape_bytes(&n);
        prop_assert!(!e.chars().any(is_raw_control), "{:?} escaped to {:?}", n, e);
        let q = quote_bytes(&n);
        prop_assert!(!q.chars().any(is_raw_control), "{:?} quoted as {:?}", n, q);
    }

    #[test]
    fn quoted_names_round_trip_through_bash(names in prop::collection::vec(name(), 1..32)) {
        let names: Vec<Vec<u8>> = names.into_iter().filter(|n| !n.is_empty()).collect();
        let quoted: Vec<String> = names.iter().map(|n| quote_bytes(n)).collect();
        let script = format!("printf '%s\\0' {}", quoted.join(" "));
        let out = Command::new("bash").args(["-c", &script]).output().expect("bash");
        prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Vec<Vec<u8>> = out
            .stdout
            .split(|&b| b == 0)
            .map(<[u8]>::to_vec)
            .collect();
        let mut want = names.clone();
        want.push(Vec::new());
        prop_assert_eq!(got, want);
    }
}
