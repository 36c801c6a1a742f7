#!/usr/bin/env bash
# Installs what the tests drive (real ctr, containerd, runc, crun, busybox,
# umoci, docker-registry, skopeo, htpasswd, openssl, CNI plugins,
# iptables, ip, pgrep, Go with spdystream, the Kubernetes Python client)
# and runs every test in the workspace. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ctr >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v crun >/dev/null || need+=(crun)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[[ -e /usr/include/google/protobuf/empty.proto ]] || need+=(libprotobuf-dev)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v umoci >/dev/null || need+=(umoci)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v openssl >/dev/null || need+=(openssl)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v pgrep >/dev/null || need+=(procps)
# The streaming clients: Go's spdystream (kubectl's SPDY) and the
# Kubernetes Python client (its WebSocket channels).
command -v go >/dev/null || need+=(golang-go)
[[ -d /usr/share/gocode/src/github.com/docker/spdystream ]] || need+=(golang-github-docker-spdystream-dev)
/usr/bin/python3 -c 'import kubernetes.stream' 2>/dev/null || need+=(python3-kubernetes)
if ((${#need[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The portmap plugin never removes its shared chains; once no container's
# rule is left in them (every test removed its own), remove them too.
if command -v iptables >/dev/null && iptables -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 \
    && [[ $(iptables -t nat -S CNI-HOSTPORT-DNAT | wc -l) -eq 1 ]]; then
    iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null || true
    iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT 2>/dev/null || true
    iptables -t nat -D POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ 2>/dev/null || true
    for chain in CNI-HOSTPORT-DNAT CNI-HOSTPORT-MASQ CNI-HOSTPORT-SETMARK; do
        iptables -t nat -F "$chain" 2>/dev/null || true
        iptables -t nat -X "$chain" 2>/dev/null || true
    done
fi
# One total over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
