#!/bin/sh
# Sets everything up, builds a sample VM disk (qcow2, GPT, ext4 with files), and runs the tool's main job on it:
# resize --info, then grow the disk with its last partition and filesystem, in place.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
work="${DEMO_DIR:-$(mktemp -d /var/tmp/prl-disk-tool-demo.XXXXXX)}"
node dist/test/demo-image.js "$work"
disk="$work/demo/disk.qcow2"
tool="node dist/src/cli/main.js"
echo "== prl_disk_tool resize --hdd $disk --info"
$tool resize --hdd "$disk" --info
echo "== prl_disk_tool resize --hdd $disk --size 2G --resize_partition"
$tool resize --hdd "$disk" --size 2G --resize_partition
echo "== prl_disk_tool resize --hdd $disk --info"
$tool resize --hdd "$disk" --info
echo "The sample image stays in $work"
