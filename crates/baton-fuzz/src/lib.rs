//! The checks Baton's fuzz targets run on arbitrary bytes: each parses what Baton reads from
//! outside as Baton reads it, and asserts what must hold of whatever it accepts. A panic here is a
//! finding. `fuzz/` wraps each in a cargo-fuzz target; `tests/regressions.rs` replays the seeds and
//! every input saved under `regressions/<target>/`.

use baton_core::events::Event;
use baton_core::{Checkpoint, Job, Limits, ReadableJob, Step};

/// A target's check: it panics on a finding.
pub type Check = fn(&[u8]);

/// The targets, by name: each a folder of seeds and regressions, and a cargo-fuzz target.
pub const TARGETS: &[(&str, Check)] = &[
    ("job_payload", job_payload),
    ("stream_lines", stream_lines),
    ("checkpoint_event", checkpoint_event),
    ("transcript_import", transcript_import),
];

/// A job payload from the stream: a job that validates survives its own serialisation, its plan's
/// step names read back, and what is readable of any payload agrees with the job.
pub fn job_payload(data: &[u8]) {
    let readable = ReadableJob::from_payload(data);
    let Ok(job) = Job::from_json(data, &Limits::default()) else {
        return;
    };
    let again = Job::from_json(job.to_json().as_bytes(), &Limits::default())
        .expect("a valid job's own JSON is valid");
    assert_eq!(again, job, "a valid job round-trips");
    let readable = readable.expect("a valid job is readable");
    assert_eq!(readable.build_id, job.build_id.as_str());
    for step in Step::plan_of(&job) {
        assert_eq!(Step::from_name(step.name()), Some(step.clone()), "{step}");
        let _ = step.prompt(&job, &baton_core::plan::StepPrompts::default());
    }
}

/// The CLI's stdout, line by line, as a run's supervisor reads it.
pub fn stream_lines(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut state = baton_agent::stream::StreamState::default();
    for line in text.lines() {
        state.feed(line);
    }
    assert!(state.skipped_lines <= state.lines);
    if let Some(result) = &state.result {
        let _ = result.denied_tool_ids();
    }
}

/// A checkpoint and an event as Redis hands them back: whatever parses survives its own
/// serialisation.
pub fn checkpoint_event(data: &[u8]) {
    if let Ok(cp) = serde_json::from_slice::<Checkpoint>(data) {
        let text = serde_json::to_string(&cp).expect("a checkpoint serialises");
        let back: Checkpoint = serde_json::from_str(&text).expect("its own JSON parses");
        assert_eq!(back, cp);
    }
    if let Ok(event) = serde_json::from_slice::<Event>(data) {
        let text = serde_json::to_string(&event).expect("an event serialises");
        let back: Event = serde_json::from_str(&text).expect("its own JSON parses");
        assert_eq!(back, event);
    }
}

/// A transcript or archive an operator imports, a transcript read as a conversation, and stored
/// pieces joined back for a restore: what is accepted holds only the session's own files, within
/// the bound, and a restore gives back exactly the bytes whose length and hash were stored.
pub fn transcript_import(data: &[u8]) {
    let _ = baton_transcript::conversation::messages(data);
    // The input as stored pieces (split at its first byte's value), claimed to hold the input.
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let pieces = [data[..cut].to_vec(), data[cut..].to_vec()];
    let whole: Vec<u8> = data.to_vec();
    let file = baton_transcript::StoredFile {
        path: "s.jsonl".into(),
        length: whole.len() as i64,
        sha256: baton_transcript::sha256(&whole),
        pieces: 2,
    };
    if let Ok(restored) = baton_transcript::assemble(&file, &pieces) {
        assert_eq!(restored.len() as i64, file.length);
        assert_eq!(baton_transcript::sha256(&restored), file.sha256);
    }
    const MAX: u64 = 1 << 20;
    if let Ok(imported) = baton_transcript::archive::read_import(Some("s.jsonl"), data, MAX) {
        baton_transcript::check_session_id(&imported.session_id).expect("a checked id");
        let total: u64 = imported.files.iter().map(|f| f.bytes.len() as u64).sum();
        assert!(total <= MAX, "{total} bytes passed the bound");
        for file in &imported.files {
            baton_transcript::check_file_path(&imported.session_id, &file.path)
                .expect("only the session's own paths");
        }
    }
}
