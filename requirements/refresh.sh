#!/usr/bin/env bash
# Re-resolve the lock files from pyproject.toml (needs uv: pip install uv).
#   bash requirements/refresh.sh            # keep pinned versions where still allowed
#   bash requirements/refresh.sh --upgrade  # move every pin to the newest allowed release
# The locks are universal (x86-64 and arm64 Linux, Python 3.11); commit them with the change
# to pyproject.toml that needed them.
set -euo pipefail
cd "$(dirname "$0")/.."
lock() {  # lock OUTPUT EXTRA...
    local out=$1; shift
    local extras=()
    for extra in "$@"; do extras+=(--extra "$extra"); done
    uv pip compile pyproject.toml "${extras[@]}" --universal --python-version 3.11 -c requirements/constraints.txt \
        --quiet --no-header --annotation-style line "${UPGRADE[@]}" -o "requirements/$out"
}
UPGRADE=()
if [ "${1:-}" = "--upgrade" ]; then UPGRADE=(--upgrade); fi
lock device.txt device            # the bedside device (Raspberry Pi): docs/deployment.md
lock train.txt device train       # training and evaluating models
lock ci.txt device train demo sim firmware interop dev  # everything the test suite runs (.ci/run)
# Every lock must install on both platforms the project supports.
for platform in x86_64-manylinux_2_28 aarch64-manylinux_2_28; do
    for out in device train ci; do
        uv pip compile "requirements/$out.txt" --python-version 3.11 --python-platform "$platform" \
            --quiet --no-header -o /dev/null || { echo "requirements/$out.txt does not install on $platform" >&2; exit 1; }
    done
done
