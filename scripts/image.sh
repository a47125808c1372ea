#!/usr/bin/env bash
# Build the container image from a release binary and run it once:
#   scripts/image.sh BINARY [TAG]
# The image is FROM scratch: the binary, the shared libraries `ldd` names, the
# CA certificates and an empty writable data folder. buildah builds it
# (Debian's package; no daemon, no registry), podman runs it: `--version`,
# then `config check` of a simulator release mounted read-only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"
tag="${2:-localhost/backstop:$("$bin" --version | awk '{print $2}')}"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
install -D -m 0755 "$bin" "$root/usr/local/bin/backstop"
# Every library the binary loads, at the path the dynamic loader looks for it.
for lib in $(ldd "$bin" | awk '/=>/ {print $3} $1 ~ /^\// {print $1}'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
install -d -m 1777 "$root/tmp"
install -d -m 0755 "$root/var/lib/backstop"
cp deploy/container/Containerfile "$ctx/"
# vfs storage and chroot isolation: works as root inside a container too.
export STORAGE_DRIVER=vfs
buildah --storage-driver vfs bud --quiet --isolation chroot --layers=false -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "built $tag ($(du -sh "$root" | cut -f1) unpacked)"

# Run it. runc with cgroupfs and explicit limits: CI runs inside a container
# whose cgroups are hybrid and whose rlimits cannot be raised.
run=(podman --storage-driver vfs --runtime runc --cgroup-manager cgroupfs run --rm --network none
     --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --user 10001:10001)
"${run[@]}" "$tag" --version
cfgdir="$(mktemp -d)"
chmod 0755 "$cfgdir"
cat > "$cfgdir/backstop.toml" <<'TOML'
[ledger]
url = "sqlite:///tmp/ledger.db?mode=rwc"

[[releases]]
name = "checkout"
service = "checkout"
target = "sim/checkout"
candidate_revision = "v42"
last_known_good = "v41"
source = { kind = "simulator" }
executor = { kind = "simulator" }
TOML
chmod 0644 "$cfgdir/backstop.toml"
"${run[@]}" -v "$cfgdir:/etc/backstop:ro" "$tag" --config /etc/backstop/backstop.toml config check
rm -rf "$cfgdir"
# vfs keeps a full copy per image: leave none behind on the machine.
podman --storage-driver vfs rmi -f "$tag" >/dev/null
