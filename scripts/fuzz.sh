#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for a short time over
# its seed corpus; new inputs go to a scratch folder, never into the checked-in seeds.
# Usage: scripts/fuzz.sh [SECONDS]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-15}
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD_DIR" --target fuzz_pdu >/dev/null
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$BUILD_DIR/tests/fuzz/fuzz_pdu" "$scratch" tests/fuzz/corpus_pdu \
  -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 2>&1 | tail -n 12
echo "fuzz_pdu: no crash in ${SECONDS_PER_TARGET}s"
