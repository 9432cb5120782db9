#!/usr/bin/env bash
# The embedded default in one command: installs what is missing, builds, starts one tandemd
# on 127.0.0.1 (data in .cluster/n1) with a demo volume, and prints how to reach it.
# Idempotent: a node already running is left alone; the demo volume is created once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ADDR=${TANDEM_ADDR:-127.0.0.1}
DATA=${TANDEM_DATA:-$ROOT/.cluster/n1}
LOG=$DATA.log
URL="http://$ADDR:8080"

scripts/install-deps.sh
scripts/build.sh tandemd tandemctl >/dev/null

mkdir -p "$DATA"
ctl() { build/mgmt/tandemctl --server "$URL" --token-file "$DATA/admin.token" "$@"; }

if ! flock -n "$DATA/tandemd.lock" true 2>/dev/null; then
  echo "tandemd is already running on $ADDR (data $DATA)"
else
  : >"$LOG"
  nohup build/mgmt/tandemd --node-name n1 --bind "$ADDR" --data-dir "$DATA" >>"$LOG" 2>&1 &
  pid=$!
  # Wait for the daemon's ready line (or its exit), at most 30 s.
  for _ in $(seq 300); do
    grep -q " ready: " "$LOG" && break
    kill -0 "$pid" 2>/dev/null || { cat "$LOG"; echo "tandemd failed to start" >&2; exit 1; }
    sleep 0.1
  done
  grep -q " ready: " "$LOG" || { cat "$LOG"; echo "tandemd did not become ready" >&2; exit 1; }
  echo "started tandemd (pid $pid), log: $LOG"
fi

if ! ctl volume get demo >/dev/null 2>&1; then
  ctl volume create demo --size 1GiB >/dev/null
fi

cat <<MSG

Tandem is running (one node, the embedded default).
  Console:       $URL/   (sign in with the admin token)
  API:           $URL/api/v1   (OpenAPI at $URL/api/v1/openapi.json, metrics at $URL/metrics)
  Admin token:   $(cat "$DATA/admin.token")   (also in $DATA/admin.token)
  Demo volume:   iscsi://$ADDR:3260/iqn.2026-11.dev.tandem:demo/0
  CLI:           build/mgmt/tandemctl --token-file $DATA/admin.token volume list
  Stop:          kill \$(cat $DATA/tandemd.lock)
MSG
