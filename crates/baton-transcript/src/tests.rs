use super::*;

const ID: &str = "7904d772-5f73-4722-832d-498a0baf7444";

#[test]
fn folder_names_follow_the_cli() {
    assert_eq!(
        project_folder_name(Path::new("/srv/work/project-a")),
        "-srv-work-project-a"
    );
    assert_eq!(project_folder_name(Path::new("/tmp/a.b_c")), "-tmp-a-b-c");
    // One UTF-16 unit, one '-': 'é' is one unit, '😀' is two.
    assert_eq!(project_folder_name(Path::new("/é/😀")), "-----");
    // Exactly 200 characters stay whole.
    let edge = format!("/{}", "x".repeat(199));
    assert_eq!(project_folder_name(Path::new(&edge)).len(), 200);
}

#[test]
fn long_folder_names_are_cut_and_hashed_as_the_cli_does() {
    // Captured from the real CLI 2.1.332: a run in this folder wrote its transcript under
    // `projects/<the first 200 characters>-yutexz`.
    let cwd = format!("/tmp/cc/{}/{}", "a".repeat(120), "b".repeat(100));
    let name = project_folder_name(Path::new(&cwd));
    let expected_prefix = format!("-tmp-cc-{}-{}", "a".repeat(120), "b".repeat(71));
    assert_eq!(name, format!("{expected_prefix}-yutexz"));
}

#[test]
fn base36_matches_javascript() {
    assert_eq!(base36(0), "0");
    assert_eq!(base36(35), "z");
    assert_eq!(base36(36), "10");
    assert_eq!(base36(2_147_483_648), "zik0zk");
}

#[test]
fn only_the_sessions_own_paths_are_accepted() {
    check_file_path(ID, &format!("{ID}.jsonl")).unwrap();
    check_file_path(ID, &format!("{ID}/tool-results/a.txt")).unwrap();
    for bad in [
        "other.jsonl".to_string(),
        format!("{ID}/../../etc/passwd"),
        format!("{ID}/./x"),
        format!("{ID}//x"),
        format!("{ID}/"),
        format!("/{ID}.jsonl"),
        format!("{ID}x/y"),
    ] {
        assert!(check_file_path(ID, &bad).is_err(), "{bad}");
    }
    for bad in ["", "..", "a/b", "a.b", &"x".repeat(256)] {
        assert!(check_session_id(bad).is_err(), "{bad:?}");
    }
}

fn file(path: &str, text: &str) -> SessionFile {
    SessionFile {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
    }
}

fn stored(f: &SessionFile, pieces: i32) -> StoredFile {
    StoredFile {
        path: f.path.clone(),
        length: f.bytes.len() as i64,
        sha256: f.sha256(),
        pieces,
    }
}

fn piece(c: &FileChange) -> Vec<u8> {
    assemble(
        &StoredFile {
            path: c.path.clone(),
            length: c.new_bytes,
            sha256: sha256(&{
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(c.data.as_slice())
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }),
            pieces: 1,
        },
        std::slice::from_ref(&c.data),
    )
    .unwrap()
}

#[test]
fn only_new_bytes_are_sent_when_a_file_grew() {
    let old = file("s.jsonl", "{\"a\":1}\n");
    let new = file("s.jsonl", "{\"a\":1}\n{\"b\":2}\n");
    let c = changes(std::slice::from_ref(&new), &[stored(&old, 1)]);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].base_length, old.bytes.len() as i64);
    assert_eq!(c[0].base_sha256, old.sha256());
    assert_eq!(c[0].length, new.bytes.len() as i64);
    assert_eq!(c[0].sha256, new.sha256());
    assert_eq!(piece(&c[0]), b"{\"b\":2}\n");
    // The same file again: nothing to send.
    assert!(changes(std::slice::from_ref(&new), &[stored(&new, 2)]).is_empty());
}

#[test]
fn the_whole_file_is_sent_when_its_start_changed_or_it_has_too_many_pieces() {
    let old = file("s.jsonl", "{\"a\":1}\n");
    let rewritten = file("s.jsonl", "{\"A\":1}\n{\"b\":2}\n");
    let c = changes(std::slice::from_ref(&rewritten), &[stored(&old, 1)]);
    assert_eq!((c[0].base_length, c[0].base_sha256.len()), (0, 0));
    assert_eq!(piece(&c[0]), rewritten.bytes);

    let grown = file("s.jsonl", "{\"a\":1}\n{\"b\":2}\n");
    let c = changes(std::slice::from_ref(&grown), &[stored(&old, MAX_PIECES)]);
    assert_eq!(c[0].base_length, 0, "too many pieces: sent whole");

    let shrunk = file("s.jsonl", "{");
    let c = changes(std::slice::from_ref(&shrunk), &[stored(&old, 1)]);
    assert_eq!(c[0].base_length, 0);
    let brand_new = file("s/tool-results/x", "out");
    let c = changes(std::slice::from_ref(&brand_new), &[stored(&old, 1)]);
    assert_eq!(c[0].base_length, 0);
}

#[test]
fn sessions_are_read_whole_and_restored_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let cwd = dir.path().join("work/p1");
    let folder = project_folder(&config, &cwd);
    assert!(read_session(&folder, ID).unwrap().is_none());
    write_file(&folder, ID, &format!("{ID}.jsonl"), b"{}\n").unwrap();
    write_file(&folder, ID, &format!("{ID}/tool-results/t1.txt"), b"out").unwrap();
    write_file(&folder, ID, &format!("{ID}/subagents/a.jsonl"), b"{}\n").unwrap();
    assert!(write_file(&folder, ID, "../escape.jsonl", b"x").is_err());
    let files = read_session(&folder, ID).unwrap().unwrap();
    let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("{ID}.jsonl"),
            format!("{ID}/subagents/a.jsonl"),
            format!("{ID}/tool-results/t1.txt")
        ]
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".baton")), "{names:?}");
    assert_eq!(find_session(&config, &cwd, ID), Some(folder.clone()));
    assert_eq!(
        find_session(&config, &dir.path().join("elsewhere"), ID),
        Some(folder.clone()),
        "found in another project's folder, as the CLI does"
    );

    let mut list: Vec<StoredFile> = files.iter().map(|f| stored(f, 1)).collect();
    list.push(StoredFile {
        path: format!("{ID}/tool-results/gone.txt"),
        length: 3,
        sha256: sha256(b"abc"),
        pieces: 1,
    });
    list[0].sha256 = sha256(b"[]\n");
    assert_eq!(
        local_state(&folder, &list).unwrap(),
        [
            LocalState::Stale,
            LocalState::Current,
            LocalState::Current,
            LocalState::Missing
        ]
    );
}

#[test]
fn assembling_checks_length_and_hash() {
    let whole = b"hello world".to_vec();
    let f = StoredFile {
        path: "x".into(),
        length: whole.len() as i64,
        sha256: sha256(&whole),
        pieces: 2,
    };
    let pieces = vec![compress(b"hello "), compress(b"world")];
    assert_eq!(assemble(&f, &pieces).unwrap(), whole);
    assert!(assemble(&f, &pieces[..1]).is_err(), "short");
    let wrong = vec![compress(b"hello "), compress(b"World")];
    assert!(assemble(&f, &wrong).is_err(), "hash");
    let long = vec![compress(b"hello "), compress(b"world and more")];
    assert!(assemble(&f, &long).is_err(), "long");
    assert!(assemble(&f, &[b"not zlib".to_vec()]).is_err());
}

#[test]
fn archives_round_trip_and_bad_ones_are_refused() {
    let files = vec![
        file(
            &format!("{ID}.jsonl"),
            &format!("{{\"sessionId\":\"{ID}\"}}\n"),
        ),
        file(&format!("{ID}/tool-results/t.txt"), "out"),
    ];
    let mut tgz = Vec::new();
    archive::write_tar_gz(&files, &mut tgz).unwrap();
    let back = archive::read_import(Some("x.tar.gz"), &tgz, 1 << 20).unwrap();
    assert_eq!(back.session_id, ID);
    assert_eq!(back.files, files);
    assert!(
        archive::read_import(None, &tgz, 10).is_err(),
        "over the bound"
    );

    // A bare transcript: named by its file, or by its lines.
    let bare = files[0].bytes.clone();
    let named = archive::read_import(Some(&format!("/in/{ID}.jsonl")), &bare, 1 << 20).unwrap();
    assert_eq!(named.session_id, ID);
    let by_line = archive::read_import(Some("export.jsonl"), &bare, 1 << 20).unwrap();
    let no_id = b"{\"type\":\"user\"}\n";
    let by_name = archive::read_import(Some(&format!("{ID}.jsonl")), no_id, 1 << 20).unwrap();
    assert_eq!(by_name.session_id, ID);
    assert!(archive::read_import(Some("export.jsonl.txt"), no_id, 1 << 20).is_err());
    assert_eq!(by_line.session_id, ID);
    assert!(archive::read_import(None, b"not json\n", 1 << 20).is_err());
    let other = format!("{{\"sessionId\":\"{ID}\"}}\n{{\"sessionId\":\"other\"}}\n");
    assert!(archive::read_import(None, other.as_bytes(), 1 << 20).is_err());

    // The tar crate will not write a '..' path, so the header's name is set by hand, as a hostile
    // archive would have it.
    let mut raw = tar::Builder::new(Vec::new());
    for (name, data) in [
        (format!("{ID}.jsonl"), &files[0].bytes[..]),
        (format!("{ID}/../../evil"), &b"x"[..]),
    ] {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        raw.append(&header, data).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw.into_inner().unwrap()).unwrap();
    let tgz = gz.finish().unwrap();
    let err = archive::read_import(None, &tgz, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("evil"), "{err}");
}

#[test]
fn a_conversation_is_read_from_both_transcript_shapes() {
    let text = [
        r#"{"type":"queue-operation"}"#,
        r#"{"type":"user","message":{"role":"user","content":"first prompt"}}"#,
        r#"{"type":"assistant","message":{"content":[{"type":"text","text":"an answer"},{"type":"tool_use","name":"Write"}]}}"#,
        r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"ok"}]}}"#,
        "garbage",
        r#"{"type":"assistant","message":{"content":"last"}}"#,
    ]
    .join("\n");
    let m = conversation::messages(text.as_bytes());
    let pairs: Vec<_> = m
        .iter()
        .map(|m| (m.role.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("user", "first prompt"),
            ("assistant", "an answer"),
            ("assistant", "last")
        ]
    );
}

#[test]
fn what_is_stored_after_a_write_follows_its_changes() {
    let old = file("s.jsonl", "{\"a\":1}\n");
    let side = file("s/tool-results/t", "x");
    let stored = vec![stored(&old, 3), stored(&side, 1)];
    let grown = file("s.jsonl", "{\"a\":1}\n{\"b\":2}\n");
    let after = stored_after(&stored, &changes(std::slice::from_ref(&grown), &stored));
    let transcript = after.iter().find(|f| f.path == "s.jsonl").unwrap();
    assert_eq!(
        (transcript.length, transcript.pieces),
        (grown.bytes.len() as i64, 4)
    );
    assert_eq!(transcript.sha256, grown.sha256());
    assert!(
        after.contains(&stored[1]),
        "an unchanged file stays as it was"
    );
    // Replaced whole: one piece again.
    let rewritten = file("s.jsonl", "{\"z\":0}\n");
    let after = stored_after(&stored, &changes(std::slice::from_ref(&rewritten), &stored));
    assert_eq!(
        after.iter().find(|f| f.path == "s.jsonl").unwrap().pieces,
        1
    );
}
