#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
#   bash tests/run.sh                             # whole suite (what CI runs)
#   bash tests/run.sh -m "not e2e and not slow"   # the fast loop; extra arguments go to pytest
# PYTHON picks the interpreter (default python3: your current environment).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# System parts the end-to-end tests use: a real Mosquitto broker and headless Chromium.
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ] || ! command -v chromium >/dev/null || ! command -v gcc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto chromium chromium-driver gcc >/dev/null
    else
        echo "tests/run.sh: install mosquitto and chromium (Debian: apt-get install mosquitto chromium chromium-driver)" >&2
    fi
fi

"$PY" -m pip install --quiet --disable-pip-version-check -e ".[device,train,demo,sim,firmware,interop,dev]"

# tflite-runtime 2.14 needs numpy<2, so the compatibility test runs it in its own environment.
TFL_ENV=.venv-tflite214
if [ ! -x "$TFL_ENV/bin/python" ] || ! "$TFL_ENV/bin/python" -c "import tflite_runtime, cryptography, click" 2>/dev/null; then
    "$PY" -m venv "$TFL_ENV"
    "$TFL_ENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "numpy<2" "tflite-runtime==2.14.0" "cryptography>=41" "click>=8.1"
fi
export ADVISOR_TFLITE214_PYTHON="$PWD/$TFL_ENV/bin/python"

# The device must run with only the "device" extra, at the versions a Raspberry Pi installs
# (requirements/device.txt): no tensorflow, pandas or scikit-learn.
DEV_ENV=.venv-device
if [ ! -x "$DEV_ENV/bin/python" ]; then
    "$PY" -m venv "$DEV_ENV"
fi
"$DEV_ENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements/device.txt
"$DEV_ENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
export ADVISOR_DEVICE_ONLY_PYTHON="$PWD/$DEV_ENV/bin/python"

# Two workers (pytest-xdist): most end-to-end tests wait on processes, so the slow ones (run first,
# tests/conftest.py) share the machine with the rest. TEST_WORKERS=0 runs in this process. The
# ten longest tests are listed at the end: where the suite's time goes, measured on every run.
exec "$PY" -m pytest -n "${TEST_WORKERS:-2}" --durations=10 "$@"
