"""A user's mistake gets one line naming the option, before any slow work, and no traceback."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tools.cli.common import require_modules
from tools.cli.main import main
from tools.rigs.bench_inference import InferenceTiming, not_measured
from tools.ward.demo import replay_outcome


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_broker_that_is_not_a_url_is_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()  # loading it would fail: the broker is checked first
    result = invoke("replay", "--data", str(empty), "--patient", "3", "--broker", "notaurl", "--device", "d")
    assert result.exit_code == 2 and "Invalid value for --broker" in result.output
    assert "must look like mqtt://host:1883 or mqtts://host:8883, got 'notaurl'" in result.output
    secret = invoke("station", "--broker", "http://ann:pw@host", "--device", "d")
    assert secret.exit_code == 2 and "pw" not in secret.output and "'host'" in secret.output
    bundle = invoke("flash", str(tmp_path), "--broker", "nothing", "--device", "d")
    assert bundle.exit_code == 2 and "--broker" in bundle.output


def test_speed_is_checked_before_the_data_and_named(tmp_path):
    result = invoke(
        "replay", "--data", str(tmp_path), "--broker", "mqtt://127.0.0.1:1", "--device", "d", "--speed", "fast"
    )
    assert result.exit_code == 2 and "Invalid value for '--speed': 'fast' is not a number" in result.output
    zero = invoke("replay", "--data", str(tmp_path), "--broker", "mqtt://127.0.0.1:1", "--device", "d", "--speed", "0")
    assert zero.exit_code == 2 and "'--speed': must be positive" in zero.output


def test_check_config_refuses_files_that_do_not_exist(tmp_path):
    config = tmp_path / "device.toml"
    config.write_text('trust = ["/etc/advisor/release.pub"]\nrisk_bundles = ["/nope/mortality"]\n')
    result = invoke("device", "check-config", str(config))
    assert result.exit_code == 1
    assert (
        "trust key /etc/advisor/release.pub does not exist; risk bundle /nope/mortality does not exist" in result.output
    )
    assert "valid" not in result.output


def test_missing_extras_and_help_texts():
    with pytest.raises(click.ClickException, match=r"needs the 'train' extra \(no_such_module_x not installed\)"):
        require_modules("train", "json", "no_such_module_x")
    assert "Patients the load is spread over" in invoke("load", "--help").output
    assert "Patients the readings are spread over" in invoke("bench", "--help").output
    mimic = invoke("train", "mortality", "--help").output
    mimic_help = " ".join(mimic[mimic.index("--mimic") : mimic.index("--out")].split())
    assert mimic_help == "--mimic DIRECTORY MIMIC-III or MIMIC-IV folder. [default: ($ADVISOR_MIMIC_DIR)]"


def test_mimic_folder_missing_is_one_line(monkeypatch):
    monkeypatch.delenv("ADVISOR_MIMIC_DIR", raising=False)
    result = invoke("train", "mortality", "--out", "/tmp/never")
    assert result.exit_code == 2 and "give the MIMIC-III or MIMIC-IV folder, or set ADVISOR_MIMIC_DIR" in result.output


def test_bench_says_which_rows_it_could_not_measure():
    litert = [InferenceTiming("TFLite int8", "ai-edge-litert", 0.5, 0.7, 10)]
    missing = not_measured(litert)
    assert any(m.startswith("Keras float on tensorflow") for m in missing)
    assert any("tflite-runtime 2.14" in m for m in missing)


def test_a_stopped_demo_replay_says_how_far_it_got():
    assert replay_outcome(167, 171) == "replay stopped: 167 of 171 events sent"
    assert replay_outcome(171, 171) == "replay finished: 171 events sent"


@pytest.mark.e2e  # it tries a connection to the broker (refused)
def test_no_stray_progress_label_off_a_terminal(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    log.write_text("")
    result = CliRunner().invoke(
        main, ["replay", "--data", str(log), "--broker", "mqtt://127.0.0.1:1", "--device", "d", "--timeout", "1"]
    )
    assert "events" not in result.stderr.splitlines()


def test_tls_failures_are_described_by_their_cause():
    import ssl

    from device.mqtt.client import describe_connect_failure, describe_refusal

    def failure(message: str) -> ssl.SSLCertVerificationError:
        error = ssl.SSLCertVerificationError(1, message)
        error.verify_message = message
        return error

    assert "for another name" in describe_connect_failure(
        failure("Hostname mismatch, certificate is not valid for 'x'.")
    )
    assert "--ca-file" in describe_connect_failure(failure("unable to get local issuer certificate"))
    assert "--ca-file" in describe_connect_failure(failure("self-signed certificate in certificate chain"))
    assert "refused the credentials" in describe_refusal("Not authorized")
    assert describe_refusal("Server unavailable") == "the broker refused the connection: Server unavailable"


def test_the_device_waits_between_connection_attempts_on_its_own_schedule():
    """The wait the device announces ("trying again in N s") is the one it keeps: its own, not paho's."""
    from device.mqtt.client import backoff_s

    assert [backoff_s(n, 1, 60) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_s(0, 1, 60) == 1 and backoff_s(3, 0.5, 1) == 1


def test_client_certificate_options_go_together(tmp_path):
    cert = tmp_path / "client.crt"
    cert.write_text("x")
    result = invoke("station", "--broker", "mqtts://h:8883", "--device", "d", "--client-cert", str(cert))
    assert result.exit_code == 2 and "--client-cert" in result.output and "give both or neither" in result.output


def test_bundle_info_shows_both_evaluation_views_and_demo_training():
    dose = invoke("bundle", "info")
    assert dose.exit_code == 0
    assert "lstm_gru_tflite_int8 (chronological split)" in dose.output
    assert (
        "lstm_gru_tflite_int8 (leave-patients-out)" in dose.output
        and "gradient_boosting (leave-patients-out)" in dose.output
    )
    assert "DEMO-TRAINED" not in dose.output
    from device.models.bundle import default_bundle_path

    mortality = invoke("bundle", "info", str(default_bundle_path("mortality")))
    assert mortality.exit_code == 0 and "DEMO-TRAINED on the 100-patient MIMIC demo" in mortality.output
    assert "(exported)" in mortality.output and "AUROC" in mortality.output


def test_export_c_refuses_a_companion_bundle_with_a_reason(tmp_path):
    from device.models.bundle import default_bundle_path

    result = invoke("export-c", str(default_bundle_path("mortality")), "--out", str(tmp_path / "fw"))
    assert result.exit_code == 1 and "KeyError" not in result.output
    assert "bundle mortality is a companion model" in result.output and not (tmp_path / "fw").exists()


def test_a_folder_that_is_not_a_bundle_is_named_in_one_line(tmp_path):
    demo = tmp_path / "demo"
    (demo / "state").mkdir(parents=True)
    info = invoke("bundle", "info", str(demo))
    assert info.exit_code == 1 and info.output.count("\n") == 1
    assert info.output.startswith(f"Error: {demo} is not a model bundle (no manifest.json); give a bundle folder")
    state = demo / "state"
    (state / "bundles").mkdir()
    (state / "bundles" / "dose.tar.gz").write_bytes(b"")
    named = invoke("bundle", "info", str(state))
    assert named.exit_code == 1 and "it looks like a device state folder, whose installed bundles are " in named.output
    assert str(state / "bundles" / "dose.tar.gz") in named.output
    flashed = invoke("flash", str(demo), "--to", str(tmp_path / "sd"))
    assert flashed.exit_code == 1 and f"{demo} is not a model bundle (no manifest.json)" in flashed.output
    assert invoke("bundle", "info").exit_code == 0  # the packaged bundle still reads
