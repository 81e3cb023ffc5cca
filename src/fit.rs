//! Names fitted to a column (the UI's forest and chain, `imgchain tree`): what tells a name
//! from its siblings is kept, the part they share is what an ellipsis replaces, and a
//! directory is cut from the left only while the file name fits whole.

/// The character position where `name` starts to differ from the most similar of `others`,
/// moved back to the start of the number or word it falls in (so a date or counter that
/// differs is kept whole); 0 when nothing is shared or `name` is all shared.
pub fn distinct_from<'a>(name: &str, others: impl IntoIterator<Item = &'a str>) -> usize {
    let chars: Vec<char> = name.chars().collect();
    let shared = others
        .into_iter()
        .map(|o| {
            chars
                .iter()
                .zip(o.chars())
                .take_while(|(a, b)| *a == b)
                .count()
        })
        .max()
        .unwrap_or(0);
    if shared >= chars.len() {
        return 0;
    }
    let digit = chars[shared].is_ascii_digit();
    let mut start = shared;
    while start > 0
        && chars[start - 1].is_alphanumeric()
        && chars[start - 1].is_ascii_digit() == digit
    {
        start -= 1;
    }
    start
}

/// [`distinct_from`] for each of `names` against all the others (sorted neighbours are the
/// most similar, so this costs a sort).
pub fn distinct_starts(names: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let mut starts = vec![0; names.len()];
    for (k, &i) in order.iter().enumerate() {
        let neighbours = [k.checked_sub(1), order.get(k + 1).map(|_| k + 1)];
        let others = neighbours
            .into_iter()
            .flatten()
            .map(|j| names[order[j]].as_str());
        starts[i] = distinct_from(&names[i], others);
    }
    starts
}

/// `name` in at most `room` characters. A path loses its directories from the left
/// (`…/vms/web01.qcow2`) while the file name fits; a name loses the part before `keep_from`
/// (the character where it starts to differ from its siblings) when what follows fits,
/// else its middle, keeping the end (`app01.1710…000.qcow2`).
pub fn fit(name: &str, room: usize, keep_from: usize) -> String {
    let len = name.chars().count();
    if len <= room || room < 5 {
        return name.to_string();
    }
    if let Some((dir, file)) = name.rsplit_once('/') {
        let file_len = file.chars().count();
        if file_len + 2 <= room {
            let tail: String = name.chars().skip(len - (room - 1)).collect();
            // Whole directories or none: `…/debian-12.qcow2`, not `…n/debian-12.qcow2`.
            let tail = match tail.find('/') {
                Some(i) if i > 0 => &tail[i..],
                _ => &tail[..],
            };
            return format!("…{tail}");
        }
        let dir_len = dir.chars().count() + 1;
        return fit(file, room, keep_from.saturating_sub(dir_len));
    }
    let kept = len - keep_from.min(len);
    if keep_from > 0 && kept + 4 <= room {
        let head: String = name.chars().take(room - 1 - kept).collect();
        let tail: String = name.chars().skip(keep_from).collect();
        return format!("{head}…{tail}");
    }
    let tail = (room - 1) / 2;
    let head = room - 1 - tail;
    let start: String = name.chars().take(head).collect();
    let end: String = name.chars().skip(len - tail).collect();
    format!("{start}…{end}")
}

/// `text` in lines of at most `room` characters, broken at spaces (a longer word stands alone).
pub fn wrap(text: &str, room: usize) -> Vec<String> {
    let mut rows: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match rows.last_mut() {
            Some(row) if row.chars().count() + 1 + word.chars().count() <= room => {
                row.push(' ');
                row.push_str(word);
            }
            _ => rows.push(word.to_string()),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_end_and_lose_the_middle() {
        assert_eq!(fit("web.qcow2", 20, 0), "web.qcow2");
        let s = fit("app01.1710000000000000000.qcow2", 20, 0);
        assert_eq!(s, "app01.1710…000.qcow2");
        assert_eq!(s.chars().count(), 20);
        assert_eq!(fit("golden/debian-12.qcow2", 18, 0), "…/debian-12.qcow2");
        assert_eq!(fit("golden/debian-12.qcow2", 12, 0), "debian…qcow2");
        assert_eq!(
            fit("/tmp/ux-test/templates/centos7-golden.qcow2", 32, 0),
            "…/templates/centos7-golden.qcow2"
        );
    }

    #[test]
    fn siblings_keep_what_tells_them_apart() {
        let names = [
            "web02-snapshot-before-upgrade-20240301.qcow2".to_string(),
            "web02-snapshot-before-upgrade-20240415.qcow2".to_string(),
            "web02.qcow2".to_string(),
        ];
        let starts = distinct_starts(&names);
        assert_eq!(starts[0], "web02-snapshot-before-upgrade-".len());
        assert_eq!(starts[2], "web02".len());
        let a = fit(&names[0], 24, starts[0]);
        let b = fit(&names[1], 24, starts[1]);
        assert_eq!(a, "web02-sna…20240301.qcow2");
        assert_eq!(b, "web02-sna…20240415.qcow2");
        assert_eq!(a.chars().count(), 24);
    }

    #[test]
    fn a_word_that_differs_is_kept_from_its_start() {
        assert_eq!(
            distinct_from("db01-post-upgrade.qcow2", ["db01-post-update.qcow2"]),
            10
        );
        assert_eq!(distinct_from("snap10", ["snap11"]), 4);
        assert_eq!(distinct_from("x", std::iter::empty()), 0);
    }

    #[test]
    fn text_wraps_at_spaces_within_the_room() {
        let rows = wrap("in the commit dialog: keep the top's data, or empty it", 20);
        assert!(rows.iter().all(|r| r.chars().count() <= 20), "{rows:?}");
        assert_eq!(
            rows.join(" "),
            "in the commit dialog: keep the top's data, or empty it"
        );
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            ["averyveryverylongword", "x"]
        );
    }

    proptest::proptest! {
        #[test]
        fn fitted_names_fit(name in "[a-z0-9/._-]{0,60}", room in 5usize..70, keep in 0usize..70) {
            let out = fit(&name, room, keep);
            proptest::prop_assert!(out.chars().count() <= room.max(name.chars().count().min(room)));
            if name.chars().count() <= room {
                proptest::prop_assert_eq!(out, name);
            }
        }
    }
}
