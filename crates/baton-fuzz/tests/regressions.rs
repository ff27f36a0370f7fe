//! Every seed and every input a fuzzer once crashed on, through its target's checks, on the stable
//! toolchain in `just test`: a crash `just fuzz` finds is saved under `regressions/<target>/` and
//! stays a test from then on.

use std::path::Path;

/// The files of `dir`, or none when it does not exist.
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("a readable input");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_and_saved_crash_passes_its_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, check) in baton_fuzz::TARGETS {
        let seeds = inputs(&root.join("seeds").join(target));
        assert!(!seeds.is_empty(), "{target} has no seeds");
        for (name, bytes) in seeds
            .iter()
            .chain(&inputs(&root.join("regressions").join(target)))
        {
            eprintln!("{target}: {name}");
            check(bytes);
        }
    }
}

#[test]
fn the_seeds_reach_the_checks_past_the_parsers() {
    // A seed that does not parse would leave a target's assertions unexercised.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (_, job) in inputs(&root.join("job_payload")) {
        baton_core::Job::from_json(&job, &baton_core::Limits::default()).expect("a valid seed job");
    }
    let checkpoint = std::fs::read(root.join("checkpoint_event/checkpoint.json")).unwrap();
    serde_json::from_slice::<baton_core::Checkpoint>(&checkpoint).expect("a valid checkpoint");
    let event = std::fs::read(root.join("checkpoint_event/event.json")).unwrap();
    serde_json::from_slice::<baton_core::events::Event>(&event).expect("a valid event");
    let transcript = std::fs::read(root.join("transcript_import/session.jsonl")).unwrap();
    baton_transcript::archive::read_import(None, &transcript, 1 << 20)
        .expect("an importable transcript");
}
