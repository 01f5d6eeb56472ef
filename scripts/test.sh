#!/bin/sh
# Sets everything up, then runs the whole test suite (unit and end-to-end, with the real appliance).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
# KVM cannot run guests on the development and CI machines: skip the attempt (the tool's own fallback is tested separately).
export LIBGUESTFS_BACKEND_SETTINGS="${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}"
npx vitest run "$@"
