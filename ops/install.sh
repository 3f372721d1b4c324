#!/usr/bin/env bash
# Install Cairn on one appliance node: builds from this checkout into /opt/cairn, installs the
# systemd unit and an example config. Run as root on each of the three nodes, edit
# /etc/cairn/cairn.json (nodeId, listen, peers, disks), then `systemctl enable --now cairn`.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/opt/cairn}

command -v node >/dev/null || { echo "install.sh: node (>= 20) is required" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "install.sh: node >= 20 is required, found $(node --version)" >&2; exit 1; }

echo "building in $src"
(cd "$src" && npm ci && npm run build)

echo "installing into $prefix"
mkdir -p "$prefix"
cp -a "$src/package.json" "$src/package-lock.json" "$src/README.md" "$src/proto" "$src/dist" "$prefix/"
(cd "$prefix" && npm ci --omit=dev)

mkdir -p /etc/cairn /var/lib/cairn/data /var/lib/cairn/cache
[ -f /etc/cairn/cairn.json ] || cp "$src/ops/config/cairn.json.example" /etc/cairn/cairn.json
install -m 0644 "$src/ops/systemd/cairn.service" /etc/systemd/system/cairn.service
systemctl daemon-reload 2>/dev/null || echo "install.sh: systemd not running here; unit installed only"
echo "done: edit /etc/cairn/cairn.json, then: systemctl enable --now cairn"
