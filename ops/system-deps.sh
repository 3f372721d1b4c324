#!/usr/bin/env bash
# System packages Cairn needs besides Node: the FUSE library and tools for the mount (fuse3,
# libfuse3-dev, pkg-config), and the programs the mount's tests and benchmarks drive (fio, rsync,
# git, sqlite3). Run by `npm ci`/`npm install` (package.json "preinstall"), so the README's one run
# command brings everything. Installs with apt-get when run as root on Debian/Ubuntu; otherwise
# prints the command to run and goes on (Cairn runs without a mount; the mount says what it lacks).
# CAIRN_SKIP_SYSTEM_DEPS=1 skips it.
set -u
[ "${CAIRN_SKIP_SYSTEM_DEPS:-0}" = "1" ] && exit 0
[ "$(uname -s)" = "Linux" ] || exit 0

pkgs=(fuse3 libfuse3-dev pkg-config patch fio rsync git sqlite3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "cairn: installing system packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    if ! apt-get install -y -qq "${missing[@]}" >&2; then
      echo "cairn: could not install ${missing[*]} (apt-get failed); the FUSE mount will not work until they are installed" >&2
    fi
  fi
else
  echo "cairn: missing system packages: ${missing[*]}" >&2
  echo "cairn: install them with: sudo apt-get install -y ${missing[*]}   (the FUSE mount needs fuse3 and libfuse3-dev)" >&2
fi
exit 0
