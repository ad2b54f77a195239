#!/usr/bin/env bash
# The device path on a Raspberry Pi-class CPU, emulated: an arm64 Debian root under qemu
# user-mode emulation runs tools/rigs/arm64_probe.py (bundle verification, golden self-test, LiteRT
# inference, every decision of one AIM-94 patient) and the result is compared with x86-64.
#
#   sudo bash tools/rigs/arm64_check.sh [AIM94_DIR] [PATIENT]
#
# Needs root (debootstrap, chroot) and the Debian packages debootstrap and qemu-user-static.
# The root is kept in $ARM64_ROOT (default /var/tmp/advisor-arm64) and reused: the first run
# takes several minutes (debootstrap about 4, pip under emulation a few more).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-${ADVISOR_AIM94_DIR:-../shared/data/aim94}}
PATIENT=${2:-3}
ROOT=${ARM64_ROOT:-/var/tmp/advisor-arm64}
OUT=${ARM64_OUT:-build/arm64}
mkdir -p "$OUT"

if ! command -v debootstrap >/dev/null || [ ! -e /usr/bin/qemu-aarch64-static ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support >/dev/null
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

if [ ! -x "$ROOT/usr/bin/python3" ]; then
    echo "arm64: debootstrap into $ROOT (minutes)" >&2
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip \
        bookworm "$ROOT" http://deb.debian.org/debian >&2
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mkdir -p "$ROOT/etc/ssl/certs" "$ROOT/etc/pip"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf" || true

if [ ! -x "$ROOT/opt/venv/bin/python" ]; then
    echo "arm64: creating the device environment (pip under emulation)" >&2
    chroot "$ROOT" python3 -m venv /opt/venv
    chroot "$ROOT" /opt/venv/bin/pip install --quiet "numpy>=1.24" "ai-edge-litert>=1.2" "cryptography>=41" \
        "click>=8.1" "paho-mqtt>=2,<3" >&2
fi

rm -rf "$ROOT/opt/advisor" && mkdir -p "$ROOT/opt/advisor" "$ROOT/opt/aim94"
cp -r domain preprocessing model device tools "$ROOT/opt/advisor/"
cp -r "$DATA"/. "$ROOT/opt/aim94/"

echo "arm64: running the device path" >&2
chroot "$ROOT" /bin/sh -c "cd /opt/advisor && /opt/venv/bin/python -m tools.rigs.arm64_probe /opt/aim94 $PATIENT" \
    > "$OUT/arm64.json"
python3 -m tools.rigs.arm64_probe "$DATA" "$PATIENT" > "$OUT/x86_64.json"

python3 - "$OUT/x86_64.json" "$OUT/arm64.json" <<'PY'
import json, sys
host, arm = (json.load(open(p)) for p in sys.argv[1:3])
pairs = list(zip(host["decisions"], arm["decisions"]))
same = sum(h == a for h, a in pairs)
worst = max((abs(h[2] - a[2]) for h, a in pairs), default=0.0)
print(f"{host['machine']} vs {arm['machine']} ({arm['backend']}, Python {arm['python']}): "
      f"{same}/{len(host['decisions'])} decisions identical (status, units, model output), "
      f"largest model-output difference {worst:.6f} U; self-test arm64 {arm['self_test_worst_units']}")
sys.exit(0 if same == len(host["decisions"]) == len(arm["decisions"]) else 1)
PY
