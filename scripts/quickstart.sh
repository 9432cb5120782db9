#!/usr/bin/env bash
# A working local cluster in one command: installs what is missing, builds, starts three
# tandemd nodes on 127.0.0.1-3 (data in .cluster/n1..n3; n1 is the controller, n2 and n3 join
# it) and a demo volume with two synchronous replicas, and prints how to reach it.
# Idempotent: nodes already running are left alone; the demo volume is created once.
# TANDEM_NODES=1 starts the controller alone (the embedded default) with a 0-replica demo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NODES=${TANDEM_NODES:-3}
CLUSTER=$ROOT/.cluster
URL="http://127.0.0.1:8080"

scripts/install-deps.sh
scripts/build.sh tandemd tandemctl >/dev/null

ctl() { build/mgmt/tandemctl --server "$URL" --token-file "$CLUSTER/n1/admin.token" "$@"; }

# start NAME ADDR [tandemd args...]: starts a node unless it already runs, waits for ready.
start() {
  local name=$1 addr=$2
  shift 2
  local data=$CLUSTER/$name log=$CLUSTER/$name.log
  mkdir -p "$data"
  if ! flock -n "$data/tandemd.lock" true 2>/dev/null; then
    echo "$name is already running on $addr (data $data)"
    return
  fi
  : >"$log"
  nohup build/mgmt/tandemd --node-name "$name" --bind "$addr" --data-dir "$data" "$@" \
    >>"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do  # the ready line (or the exit), at most 30 s
    grep -q " ready: " "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "$name failed to start" >&2; exit 1; }
    sleep 0.1
  done
  grep -q " ready: " "$log" || { cat "$log"; echo "$name did not become ready" >&2; exit 1; }
  echo "started $name (pid $pid) on $addr, log: $log"
}

start n1 127.0.0.1
for i in $(seq 2 "$NODES"); do
  start "n$i" "127.0.0.$i" --join "$URL" --join-token "$(cat "$CLUSTER/n1/join.token")"
done

replicas=$((NODES > 2 ? 2 : NODES - 1))
if ! ctl volume get demo >/dev/null 2>&1; then
  # Joined nodes count once their first heartbeat arrived (well under a second).
  for _ in $(seq 100); do
    [ "$(ctl --json node list | grep -c '"state": "online"')" -ge "$NODES" ] && break
    sleep 0.1
  done
  ctl volume create demo --size 1GiB --node n1 --label "tandem/replicas=$replicas" >/dev/null
fi

cat <<MSG

Tandem is running: $NODES node(s) on 127.0.0.1-$NODES (n1 is the controller).
  Console:       $URL/   (sign in with the admin token; every node serves it)
  API:           $URL/api/v1   (OpenAPI at $URL/api/v1/openapi.json, metrics at $URL/metrics)
  Admin token:   $(cat "$CLUSTER/n1/admin.token")   (also in $CLUSTER/n1/admin.token)
  Demo volume:   iscsi://127.0.0.1:3260/iqn.2026-11.dev.tandem:demo/0   ($replicas replica(s);
                 any node's address serves it too)
  CLI:           build/mgmt/tandemctl --token-file $CLUSTER/n1/admin.token volume get demo
  Stop:          for n in $CLUSTER/n*/tandemd.lock; do kill \$(cat \$n); done
MSG
