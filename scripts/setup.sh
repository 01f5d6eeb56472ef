#!/bin/sh
# Installs everything prl-disk-tool needs on a Debian 12 host (idempotent), then builds it.
set -eu
cd "$(dirname "$0")/.."

PACKAGES="qemu-utils qemu-system-x86 libguestfs-tools libguestfs-xfs guestfs-tools linux-image-amd64 e2fsprogs xfsprogs btrfs-progs ntfs-3g fdisk gdisk lvm2 util-linux man-db attr acl ploop strace rpm"

missing=""
for package in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
npm run build
chmod +x dist/src/cli/main.js
