#!/usr/bin/env bash
# Install Cairn on one appliance node: builds from this checkout into /opt/cairn, installs the
# systemd unit and the `cairn` command. Run as root on each of the three nodes; then on the first:
#   cairn init --dir /var/lib/cairn --listen 10.0.0.1:7400 --disk /srv/disk0 /srv/disk1 /srv/disk2 --cache /ssd/cairn/cache
#   systemctl enable --now cairn
#   cairn token create --config /var/lib/cairn/cairn.json --node-id 2     (and 3)
# and on each other machine: cairn join TOKEN --dir /var/lib/cairn --listen 10.0.0.2:7400 --disk …;
# systemctl enable --now cairn. See docs/operations.md.
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
cp -a "$src/package.json" "$src/package-lock.json" "$src/README.md" "$src/proto" "$src/dist" "$src/ops" "$prefix/"
(cd "$prefix" && npm ci --omit=dev)

install -d -m 0700 /var/lib/cairn
install -m 0644 "$src/ops/systemd/cairn.service" /etc/systemd/system/cairn.service
install -m 0644 "$src/ops/systemd/cairn-mounts.service" /etc/systemd/system/cairn-mounts.service
printf '#!/bin/sh\nexec /usr/bin/node %s/dist/src/cli/main.js "$@"\n' "$prefix" > /usr/local/bin/cairn
chmod 0755 /usr/local/bin/cairn
systemctl daemon-reload 2>/dev/null || echo "install.sh: systemd not running here; unit installed only"
echo "done: cairn init … (first machine) or cairn join TOKEN … (the others), then: systemctl enable --now cairn"
