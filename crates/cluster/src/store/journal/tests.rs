//! The journal on its own: appending, reading on from a position, lines not
//! yet committed, torn lines, and the rewrite past its size limit.

use std::fs;

use super::*;

fn keys(names: &[&str]) -> BTreeSet<ObjectKey> {
    names
        .iter()
        .map(|name| ObjectKey::new(Kind::Pod, "default", name))
        .collect()
}

fn write(path: &Path) -> impl FnOnce(&[u8]) -> io::Result<()> + '_ {
    move |contents| {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, contents)?;
        fs::rename(tmp, path)
    }
}

fn generations(found: &Found) -> Vec<u64> {
    found.commits.iter().map(|(g, _)| *g).collect()
}

#[test]
fn reading_on_from_a_position_returns_only_later_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let first = append(&path, 1, &keys(&["a", "b"]), write(&path)).expect("create");
    append(&path, 2, &keys(&["c"]), write(&path)).expect("append");
    let all = read(&path, None, 2).expect("read").expect("a journal");
    assert_eq!(generations(&all), [1, 2]);
    assert_eq!(
        all.commits[0].1,
        keys(&["a", "b"]).into_iter().collect::<Vec<_>>()
    );
    let later = read(&path, Some(&first), 2)
        .expect("read")
        .expect("a journal");
    assert_eq!(generations(&later), [2]);
    assert_eq!(later.position, all.position);
    let none = read(&path, Some(&later.position), 2)
        .expect("read")
        .expect("a journal");
    assert!(none.commits.is_empty());
}

#[test]
fn lines_above_the_committed_generation_are_left_for_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    append(&path, 1, &keys(&["a"]), write(&path)).expect("create");
    append(&path, 2, &keys(&["b"]), write(&path)).expect("append");
    let found = read(&path, None, 1).expect("read").expect("a journal");
    assert_eq!(generations(&found), [1]);
    let rest = read(&path, Some(&found.position), 2)
        .expect("read")
        .expect("a journal");
    assert_eq!(generations(&rest), [2]);
}

#[test]
fn a_torn_line_is_skipped_and_the_next_commit_starts_a_line_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    append(&path, 1, &keys(&["a"]), write(&path)).expect("create");
    let mut file = OpenOptions::new().append(true).open(&path).expect("open");
    file.write_all(br#"{"g":2,"changed":[["pods","def"#)
        .expect("torn write");
    drop(file);
    let before = read(&path, None, 1).expect("read").expect("a journal");
    append(&path, 2, &keys(&["b"]), write(&path)).expect("append after a torn line");
    let found = read(&path, Some(&before.position), 2)
        .expect("read")
        .expect("a journal");
    assert_eq!(generations(&found), [2]);
    assert_eq!(
        found.commits[0].1,
        keys(&["b"]).into_iter().collect::<Vec<_>>()
    );
}

#[test]
fn past_its_limit_the_journal_is_rewritten_with_the_same_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let many: BTreeSet<ObjectKey> = (0..500)
        .map(|i| ObjectKey::new(Kind::Pod, "default", &format!("pod-with-a-long-name-{i}")))
        .collect();
    let line = entry_line(1, &many).expect("line").len() as u64;
    let mut generation = 0;
    let mut position = None;
    // Every append here fits; the one after the loop does not.
    while fs::metadata(&path).map_or(0, |m| m.len()) + line + 2 <= MAX_BYTES {
        generation += 1;
        position = Some(append(&path, generation, &many, write(&path)).expect("append"));
    }
    let old = position.expect("appended");
    generation += 1;
    let new = append(&path, generation, &many, write(&path)).expect("rewrite");
    generation += 1;
    let newest = append(&path, generation, &keys(&["z"]), write(&path)).expect("append");
    assert!(fs::metadata(&path).expect("journal").len() < MAX_BYTES / 8);
    assert_eq!(new.store, old.store, "same journal identity");
    assert_eq!(new.since, generation - 2);
    // A reader at the commit before the rewrite still finds every later one.
    let found = read(&path, Some(&old), generation)
        .expect("read")
        .expect("a journal");
    assert_eq!(generations(&found), [generation - 1, generation]);
    assert_eq!(found.position, newest);
}

#[test]
fn no_journal_or_an_unknown_kind_means_read_the_whole_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    assert!(read(&path, None, 1).expect("read").is_none());
    fs::write(
        &path,
        "{\"store\":\"x\",\"since\":0}\n{\"g\":1,\"changed\":[[\"widgets\",\"\",\"w\"]]}\n",
    )
    .expect("write");
    assert!(read(&path, None, 1).expect("read").is_none());
}
