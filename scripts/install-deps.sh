#!/usr/bin/env bash
# Installs the Debian 12 packages Tandem builds and tests with, only those missing.
# Idempotent: a machine that has them all returns at once without touching apt.
set -euo pipefail

PACKAGES=(
  g++ cmake ninja-build pkg-config
  libboost1.81-dev libssl-dev libsqlite3-dev sqlite3
  libspdlog-dev nlohmann-json3-dev libcli11-dev liblz4-dev
  libiscsi-dev libiscsi-bin libgtest-dev libgmock-dev prometheus-cpp-dev
  qemu-utils qemu-block-extra iproute2 python3 clang libclang-rt-14-dev tgt time chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
