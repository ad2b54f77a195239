"""``advisor bench`` runs end to end (tiny sizes: a smoke test, not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
@pytest.mark.e2e
def test_bench_produces_every_figure(mosquitto):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli.main",
            "bench",
            "--json",
            "--repeats",
            "100",
            "--events",
            "20",
            "--idle-events",
            "10",
            "--sustained",
            "200",
            "--patients",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    models = {(row["model"], row["runtime"]) for row in figures["inference"]}
    expected = {("TFLite int8", "ai-edge-litert"), ("TFLite float", "ai-edge-litert"), ("Keras float", "tensorflow")}
    assert expected <= models
    device = figures["device"]
    assert all(phase["lost"] == 0 and phase["client_ms_p50"] > 0 for phase in device["phases"])
    assert device["throughput"]["lost"] == 0 and device["throughput"]["events_per_s"] > 0
    assert 0 < device["cold_start_s"] < 30 and device["peak_rss_mb"] > 10
    assert figures["bundle"]["int8_tflite_bytes"] < figures["bundle"]["float_tflite_bytes"]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_drift_bench_runs_the_device_with_tracking_off_and_on(mosquitto):
    command = [
        sys.executable,
        "-m",
        "tools.cli.main",
        "bench",
        "--drift",
        "--json",
        "--events",
        "20",
        "--patients",
        "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(done.stdout)
    assert [(r["round"], r["drift"]) for r in runs] == [(1, False), (1, True), (2, False), (2, True)]
    for run in runs:
        assert run["device_ms_p50"] > 0 and run["peak_rss_mb"] > 10
        assert (run["drift_decisions"] is None) == (not run["drift"]), "tracking counts only when on"
        assert not run["drift"] or run["drift_decisions"] >= 20


@pytest.mark.slow
@pytest.mark.e2e
def test_load_on_the_ward_s_tls_set_up_reports_rate_latency_losses_and_memory(mosquitto):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cli.main",
            "load",
            "--json",
            "--patients",
            "3",
            "--burst",
            "300",
            "--soak-minutes",
            "0.1",
            "--soak-rate",
            "10",
            "--tls",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["burst_lost"] == 0 and figures["soak_lost"] == 0 and figures["soak_events"] == 60
    assert figures["burst_events_per_s"] > 0 and 0 < figures["soak_p50_ms"] <= figures["soak_p99_ms"]
    assert 10 < figures["rss_start_mb"] <= figures["rss_after_burst_mb"] + 50
    assert "TLS with the deployment profile" in figures["broker"]
