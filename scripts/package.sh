#!/bin/sh
# Builds the installable packages into dist/pkg/: a Debian package (dpkg-deb) and, with "rpm", an RPM
# (rpmbuild, packaging/rpm/prl-disk-tool.spec). Both install what the dispatcher looks for:
# /usr/sbin/prl_disk_tool (and prl-disk-tool), the man page in section 8, the code under /usr/lib/prl-disk-tool/.
# Usage: scripts/package.sh [deb|rpm|all]   (default: deb)
set -eu
cd "$(dirname "$0")/.."
what="${1:-deb}"
case "$what" in deb | rpm | all) ;; *) echo "usage: scripts/package.sh [deb|rpm|all]" >&2; exit 2 ;; esac

name=prl-disk-tool
version=$(node -p 'require("./package.json").version')
# The code carries a native addon (fs-ext, for flock) built against this node's ABI: the package needs a node of
# the same major version (>= 20). Build the package on a host whose node is the one it will run with.
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "scripts/package.sh: Node.js 20 or newer is needed (found $(node --version))" >&2; exit 1; }

out=dist/pkg
stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage/usr/lib/$name" "$stage/usr/sbin" "$stage/usr/share/man/man8" "$stage/usr/share/doc/$name"

npm run build >/dev/null
lib="$stage/usr/lib/$name"
mkdir -p "$lib/dist"
cp -r dist/src "$lib/dist/src"
find "$lib/dist" -name '*.map' -delete
cp package.json package-lock.json "$lib/"
# Production dependencies only, installed from the lock file as npm would for a user (fs-ext compiles here).
(cd "$lib" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
rm -rf "$lib/node_modules/fs-ext/build/Release/obj.target" "$lib/node_modules/fs-ext/build/Release/.deps" "$lib/node_modules/.package-lock.json"
chmod 755 "$lib/dist/src/cli/main.js"
# Relative links: the same tree works under any root (dpkg's, rpmbuild's buildroot).
ln -s "../lib/$name/dist/src/cli/main.js" "$stage/usr/sbin/prl_disk_tool"
ln -s prl_disk_tool "$stage/usr/sbin/prl-disk-tool"
gzip -9n <man/prl_disk_tool.8 >"$stage/usr/share/man/man8/prl_disk_tool.8.gz"
ln -s prl_disk_tool.8.gz "$stage/usr/share/man/man8/prl-disk-tool.8.gz"
cp README.md "$stage/usr/share/doc/$name/"

# The tools the product runs (README "Install"); nodejs from NodeSource or any source of a node >= 20.
depends="nodejs (>= 20), nodejs (<< $((node_major + 1))), qemu-utils, qemu-system-x86, libguestfs-tools, libguestfs-xfs, guestfs-tools, linux-image-amd64 | linux-image-generic, e2fsprogs, xfsprogs, btrfs-progs, ntfs-3g, fdisk, gdisk, lvm2, util-linux, attr"

build_deb() {
  root="$out/deb-root"
  rm -rf "$root"
  cp -a "$stage" "$root"
  mkdir -p "$root/DEBIAN"
  arch=$(dpkg --print-architecture)
  size=$(du -sk "$root/usr" | cut -f1)
  cat >"$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: prl-disk-tool developers <root@localhost>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Homepage: https://github.com/OpenVZ/prl-disk-tool
Description: resize, compact, merge and convert Virtuozzo disk images in place
 A drop-in re-implementation of Virtuozzo 7's prl_disk_tool for qcow2 VM images
 and ploop container images, installed where the dispatcher looks for it
 (/usr/sbin/prl_disk_tool).
EOF
  # The appliance's KVM/TCG memo is the only file the tool writes outside images (src/guest/accel.ts).
  printf '#!/bin/sh\nset -e\nif [ "$1" = purge ]; then rm -rf /var/cache/prl-disk-tool; fi\n' >"$root/DEBIAN/postrm"
  chmod 755 "$root/DEBIAN/postrm"
  dpkg-deb --root-owner-group -Zgzip --build "$root" "$out/${name}_${version}_${arch}.deb" >/dev/null
  rm -rf "$root"
  echo "$out/${name}_${version}_${arch}.deb"
}

build_rpm() {
  top="$(pwd)/$out/rpmbuild"
  rm -rf "$top"
  mkdir -p "$top"
  # No BuildRequires are checked (--nodeps): the spec repackages the staged tree, it compiles nothing.
  rpmbuild -bb --nodeps --quiet \
    --define "_topdir $top" --define "_rpmdir $(pwd)/$out" --define "stage $(pwd)/$stage" \
    --define "pkg_version $version" --define "node_major $node_major" \
    packaging/rpm/prl-disk-tool.spec >/dev/null
  rm -rf "$top"
  find "$out" -maxdepth 2 -name "$name-$version-*.rpm"
}

case "$what" in
  deb) build_deb ;;
  rpm) build_rpm ;;
  all) build_deb && build_rpm ;;
esac
