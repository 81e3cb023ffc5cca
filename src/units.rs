//! Sizes for people, one spelling everywhere (CLI, UI, operation reports).

/// Sizes in binary units, as qemu-img prints them: `512 B`, `192 KiB`, `1.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut v = n as f64;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `n` things, in English: `1 overlay`, `2 overlays`.
pub fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Seconds since the epoch as a UTC date and time to the minute (`2026-12-02 14:05 UTC`).
pub fn utc_minute(secs: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{secs} s after the epoch"))
}

/// A duration as people write one: a number and a unit, `30s`, `15m`, `12h`, `7d`, `2w`
/// (`0` alone: none).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write a number and a unit, as 7d or 12h"))?;
    let secs = match unit.trim() {
        "" if n == 0 => 0,
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?}; use s, m, h, d or w (as 7d or 12h)"
            ));
        }
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

/// A duration in the largest whole unit that keeps it readable: `3 d`, `5 h`, `12 min`.
pub fn human_age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod duration_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(parse_duration("0"), Ok(std::time::Duration::ZERO));
        assert_eq!(parse_duration("7d").map(|d| d.as_secs()), Ok(604_800));
        assert_eq!(parse_duration("12h").map(|d| d.as_secs()), Ok(43_200));
        assert_eq!(parse_duration("2w").map(|d| d.as_secs()), Ok(1_209_600));
        for bad in ["", "d", "7", "7x", "-1d", "1.5d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,20}") {
            let _ = parse_duration(&s);
        }
    }
}
