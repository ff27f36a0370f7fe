//! `baton-supervise`: the supervisor between a worker and the CLI, as a binary of its own.
//!
//! The worker can supervise with its own executable too; this one is much smaller, so starting it
//! for every run costs less. The worker uses it when it is installed beside `baton-worker`.

fn main() {
    baton_agent::supervise::run_if_supervisor();
    eprintln!(
        "baton-supervise: usage: baton-supervise {} <parent pid> -- <program> [args...]",
        baton_agent::supervise::SUPERVISE_FLAG
    );
    std::process::exit(2);
}
