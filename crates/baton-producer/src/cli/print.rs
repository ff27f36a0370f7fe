//! The text forms of `baton stats`, `baton chain` and `baton status` (`--json` prints the ledger's
//! structs as they are).

use baton_ledger::{BuildState, Transition};

/// `baton stats` as text.
pub(crate) fn stats(s: &baton_ledger::reports::Stats) {
    out!("projects                {}", s.projects);
    out!(
        "with sessions           {} ({:.1}% adoption)",
        s.projects_with_sessions,
        s.adoption_rate * 100.0
    );
    out!("active in the last hour {}", s.active_last_hour);
    out!(
        "resumes                 {} ok, {} failed ({:.1}% success)",
        s.resumed_runs,
        s.resume_failures,
        s.resume_success_rate * 100.0
    );
    for (reason, n) in &s.fresh_starts {
        out!("fresh starts            {reason}: {n}");
    }
    for (source, u) in &s.usage_by_source {
        out!(
            "usage {:<17} {} runs, {} in / {} out tokens, {} cache read, ${:.4}",
            source,
            u.runs,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cost_usd
        );
    }
}

/// `baton chain` as text.
pub(crate) fn chain(project: &str, chain: &[Transition]) {
    if chain.is_empty() {
        out!("project {project}: no sessions recorded");
        return;
    }
    out!("session chain of project {project} (oldest first):");
    for t in chain {
        let step = t.step.as_ref().map_or("-", |s| s.name());
        let build = t.build_id.as_deref().unwrap_or("-");
        let old = match (&t.old_session_id, &t.fresh_reason) {
            (Some(old), _) => old.to_string(),
            (None, Some(reason)) => format!("(fresh: {reason})"),
            (None, None) => "(fresh)".to_string(),
        };
        let new = t.new_session_id.as_deref().unwrap_or("(none)");
        let kept = if t.new_session_id.is_some() && t.old_session_id == t.new_session_id {
            " (kept)"
        } else {
            ""
        };
        out!(
            "  #{:<4} {}  {:<9} {:<25} build {}  {} -> {}{}",
            t.id,
            t.created_at.format("%Y-%m-%d %H:%M:%S"),
            t.source.as_str(),
            step,
            build,
            old,
            new,
            kept
        );
    }
}

/// `baton status` as text.
pub(crate) fn status(s: &BuildState) {
    out!("build     {}", s.build_id);
    out!("status    {}", s.status.as_str());
    out!("kind      {}", s.kind);
    out!("project   {}  version {}", s.project_id, s.version_id);
    match &s.current_step {
        Some(current) => out!("step      {current} (running)"),
        None => out!("step      {}", s.step.as_ref().map_or("-", |s| s.name())),
    }
    out!("attempt   {}", s.attempt);
    if let Some(e) = &s.last_error {
        out!("error     {e}");
    }
    for r in &s.runs {
        out!(
            "run       {:<25} {} -> {}",
            r.step,
            r.old_session_id.as_deref().unwrap_or("(fresh)"),
            r.new_session_id
        );
        if r.answer.nothing_done {
            out!("          its permissions refused every change it tried: it did nothing");
        }
    }
    if let Some(output) = &s.output {
        out!("output");
        for line in output.lines() {
            out!("  {line}");
        }
    }
}
