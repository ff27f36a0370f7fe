#!/usr/bin/env bash
# Baton end to end: migrate, start a worker, enqueue a `create` of one project; then stop that worker
# and start another on a "host" of its own (its own CLI config folder, as a second replica has),
# enqueue an `update`, print the session chain, and check that the update resumed the session the
# create left: the session travelled through the ledger. (With a real CLI both workers share its
# config folder, which holds its login.) Needs REDIS_URL and DATABASE_URL that answer (run it through scripts/with-services, as
# `just demo` does).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

say "building Baton"
cargo build --workspace --bins --quiet
BIN=$PWD/target/debug

STATE=$PWD/.baton/demo
mkdir -p "$STATE"
export BATON_STREAM=${BATON_STREAM:-baton-demo:builds}
export BATON_GROUP=${BATON_GROUP:-baton-demo-workers}
export BATON_WORKSPACE_ROOT=${BATON_WORKSPACE_ROOT:-$STATE/workspace}
export BATON_LOG_FORMAT=${BATON_LOG_FORMAT:-text}
# A free port, so the demo never collides with a worker already serving on the default.
export BATON_METRICS_ADDR=${BATON_METRICS_ADDR:-127.0.0.1:0}

if [ -n "${BATON_CLAUDE_BIN:-}" ] && [ "$(basename "$BATON_CLAUDE_BIN")" != claude-emulator ]; then
  say "using the real Claude CLI: $BATON_CLAUDE_BIN ($("$BATON_CLAUDE_BIN" --version 2>/dev/null || echo 'version unknown'))"
else
  export BATON_CLAUDE_BIN=$BIN/claude-emulator
  # Each worker's emulator keeps its sessions in a folder of its own, away from a real ~/.claude.
  HOSTS=$STATE/hosts
  rm -rf "$HOSTS"
  say "using claude-emulator (set BATON_CLAUDE_BIN to a real claude CLI to use it instead)"
fi

# A database of the demo's own, made afresh each time: the demo never touches a database that
# holds anything else, and a database an older Baton migrated never stops it.
base=${DATABASE_URL%%\?*}
query=${DATABASE_URL#"$base"}
export DATABASE_URL="${base%/*}/baton_demo$query"
say "making the demo's database baton_demo afresh"
psql "${base%/*}/postgres$query" -qc "DROP DATABASE IF EXISTS baton_demo WITH (FORCE)" -c "CREATE DATABASE baton_demo" >/dev/null \
  || die "cannot make the database baton_demo at ${base%/*} (psql is needed)"

say "applying migrations"
"$BIN/baton" migrate

WORKER=""
# start_worker NAME: a worker whose CLI keeps its sessions on host NAME; its log is $STATE/NAME.log.
start_worker() {
  LOG=$STATE/$1.log
  say "starting a worker on $1 (log: $LOG)"
  if [ -n "${HOSTS:-}" ]; then
    CLAUDE_CONFIG_DIR=$HOSTS/$1/.claude "$BIN/baton-worker" >"$LOG" 2>&1 &
  else
    "$BIN/baton-worker" >"$LOG" 2>&1 &
  fi
  WORKER=$!
}
stop_worker() {
  if [ -n "$WORKER" ] && kill -0 "$WORKER" 2>/dev/null; then
    kill -TERM "$WORKER" 2>/dev/null || true
    wait "$WORKER" 2>/dev/null || true
  fi
}
trap stop_worker EXIT
start_worker host-a

field() { awk -v k="$1" '!found && $1 == k { print $2; found = 1 }'; }

wait_build() {
  local build=$1 status=""
  for _ in $(seq 1 600); do
    status=$("$BIN/baton" status "$build" | field status)
    case "$status" in
      completed) return 0 ;;
      failed) "$BIN/baton" status "$build" >&2; die "build $build failed" ;;
    esac
    kill -0 "$WORKER" 2>/dev/null || { tail -20 "$LOG" >&2; die "the worker exited"; }
    sleep 0.5
  done
  die "build $build still $status after 5 minutes"
}

# The session a build's run of STEP left (or resumed, with `old`). awk reads to the end: quitting
# at the first match would close the pipe while `baton` may still be writing.
run_session() {
  "$BIN/baton" status "$1" | awk -v step="$2" -v which="$3" \
    '!found && $1 == "run" && $2 == step { print (which == "old" ? $3 : $5); found = 1 }'
}

PROJECT=demo-$(date +%Y%m%d-%H%M%S)
say "enqueueing a create for project $PROJECT (following its progress)"
"$BIN/baton" enqueue --project "$PROJECT" --version "$PROJECT-v1" --kind create --wait --timeout 300 \
  --prompt "Build a small todo web app: index.html, app.js and a README.md" | tee "$STATE/create.log"
CREATE=$(awk 'NR == 1 { print $2 }' "$STATE/create.log")
wait_build "$CREATE"
LEFT=$(run_session "$CREATE" compact new)
[ -n "$LEFT" ] || LEFT=$(run_session "$CREATE" metadata.documentation new)
echo "the create left session $LEFT"

stop_worker
start_worker host-b
say "enqueueing an update of $PROJECT"
"$BIN/baton" enqueue --project "$PROJECT" --version "$PROJECT-v2" --kind update --wait --timeout 300 \
  --previous-session "$LEFT" --prompt "Add due dates to the todo items in app.js" | tee "$STATE/update.log"
UPDATE=$(awk 'NR == 1 { print $2 }' "$STATE/update.log")
wait_build "$UPDATE"
RESUMED=$(run_session "$UPDATE" build old)

METRICS=$(grep -o 'serving /metrics[^ ]* .*addr=[0-9.:]*' "$LOG" | grep -o 'addr=[0-9.:]*' | cut -d= -f2 | awk 'NR == 1')
if [ -n "$METRICS" ] && command -v curl >/dev/null 2>&1; then
  say "the worker's metrics (http://$METRICS/metrics)"
  curl -fsS "http://$METRICS/metrics" | grep -E '^baton_(jobs_total|agent_runs_total|resume_decisions_total|transcript_restores_total)' || true
fi
if [ -n "${HOSTS:-}" ]; then
  say "host-b never ran the create; it got the session's files from the ledger"
  grep "restored the session's files" "$LOG" | head -1 || die "host-b did not restore the session"
fi

say "the session as the ledger keeps it"
"$BIN/baton" session show "$LEFT"

say "session chain of $PROJECT"
"$BIN/baton" chain "$PROJECT"

if [ "$RESUMED" = "$LEFT" ]; then
  say "OK: the update resumed session $RESUMED, the one the create left"
else
  die "the update resumed ${RESUMED:-nothing}, not $LEFT"
fi
