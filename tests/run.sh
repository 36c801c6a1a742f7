#!/usr/bin/env bash
# Installs what the tests drive (real ctr, containerd, runc, busybox) and
# runs every test in the workspace. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ctr >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[[ -e /usr/include/google/protobuf/empty.proto ]] || need+=(libprotobuf-dev)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
if ((${#need[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

cargo build --workspace --bins
cargo test --workspace
