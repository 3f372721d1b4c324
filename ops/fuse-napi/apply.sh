#!/usr/bin/env bash
# Applies ops/fuse-napi/use-ino.patch to node_modules/fuse-napi and rebuilds its addon from source
# (against the running Node's headers: npm_config_nodedir, else `npm config get nodedir`), so the
# mount's st_ino is Cairn's inode (src/fuse/binding.ts says why a patch is needed). Run by
# package.json "postinstall" after every npm ci/install; idempotent; safe to run by hand.
# A local build takes precedence over fuse-napi's bundled prebuilds (its lib/native-binding.js).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PKG=$ROOT/node_modules/fuse-napi
PATCH=$ROOT/ops/fuse-napi/use-ino.patch
if [ ! -d "$PKG" ]; then
  echo "cairn: node_modules/fuse-napi is not installed; nothing to patch" >&2
  exit 0
fi
ver=$(node -p "require('$PKG/package.json').version")
if [ "$ver" != "2.3.1" ]; then
  echo "cairn: fuse-napi $ver installed, but ops/fuse-napi/use-ino.patch is for 2.3.1; update the patch" >&2
  exit 1
fi
if ! grep -q FUSE_OPERATION_FLAG_USE_INO "$PKG/fuse-native.c"; then
  if ! patch -p1 -N -s -d "$PKG" < "$PATCH"; then
    echo "cairn: ops/fuse-napi/use-ino.patch did not apply to fuse-napi $ver" >&2
    exit 1
  fi
fi
built=$PKG/build/Release/fuse.node
if [ -f "$built" ] && [ "$built" -nt "$PKG/fuse-native.c" ] && grep -q "FUSE_OPERATION_FLAG_USE_INO\|use_ino" "$PKG/build/.cairn-use-ino" 2>/dev/null; then
  exit 0
fi
if [ -z "${npm_config_nodedir:-}" ]; then
  d=$(npm config get nodedir 2>/dev/null || true)
  if [ -n "$d" ] && [ "$d" != "undefined" ] && [ "$d" != "null" ]; then export npm_config_nodedir=$d; fi
fi
GYP=$(command -v node-gyp || true)
if [ -z "$GYP" ]; then
  GYP="node $(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
fi
echo "cairn: building fuse-napi $ver with the use_ino patch (node $(node --version))" >&2
if ! (cd "$PKG" && $GYP rebuild >"$PKG/.cairn-build.log" 2>&1); then
  tail -20 "$PKG/.cairn-build.log" >&2
  echo "cairn: building fuse-napi failed (needs libfuse3-dev, pkg-config and a C compiler: ops/system-deps.sh)" >&2
  exit 1
fi
echo use_ino > "$PKG/build/.cairn-use-ino"
