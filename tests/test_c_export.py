"""``advisor export-c``: the firmware package, checked by a C compiler and by TensorFlow Lite Micro.

gcc builds the package's own host check and a program that prints the header's model bytes;
the check must pass on the real bundle and fail when the header is damaged. TensorFlow Lite
Micro's interpreter (the ``tflite-micro`` wheel, x86-64 only) runs the golden vectors.
"""

from __future__ import annotations

import platform
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from device.models.bundle import default_bundle_path, open_bundle
from firmware_bridge.c_export import check_exportable, fnv1a, header_text
from tools.cli.main import main

from .conftest import IN_CI

BYTES_PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include "advisor_dose_{role}.h"
int main(void) {
    if (((uintptr_t)advisor_dose_{role}) % 16 != 0) { fprintf(stderr, "not aligned\n"); return 2; }
    if (sizeof(advisor_dose_{role}) != advisor_dose_{role}_len) { fprintf(stderr, "bad length\n"); return 3; }
    fprintf(stderr, "%s %d %d %s\n", ADVISOR_DOSE_{ROLE}_VERSION, ADVISOR_DOSE_{ROLE}_WINDOW,
            ADVISOR_DOSE_{ROLE}_FEATURES, ADVISOR_DOSE_{ROLE}_FEATURE_NAMES[ADVISOR_DOSE_{ROLE}_RESIDUAL_FEATURE]);
    fwrite(advisor_dose_{role}, 1, advisor_dose_{role}_len, stdout);
    return 0;
}
"""


@pytest.fixture(scope="module")
def gcc() -> str:
    path = shutil.which("gcc") or shutil.which("cc")
    if path is None:
        if IN_CI:
            pytest.fail("no C compiler (apt-get install gcc) — CI requires it", pytrace=False)
        pytest.skip("no C compiler")
    return path


def _build(gcc: str, folder, source: str, name: str):
    subprocess.run(
        [gcc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-o", name, source, "-lm"],
        check=True,
        cwd=folder,
        capture_output=True,
    )
    return subprocess.run([str(folder / name)], capture_output=True, cwd=folder)


def test_the_header_says_what_the_output_is_and_in_which_order_the_features_come():
    bundle = open_bundle(default_bundle_path("dose"))
    text = header_text(bundle, "int8")
    spec = bundle.feature_spec
    assert "the CHANGE from the patient's usual regular-insulin dose, in units" in text
    assert f"#define ADVISOR_DOSE_INT8_RESIDUAL_FEATURE {spec.names.index('reg_usual_units')}\n" in text
    listed = text.split("FEATURE_NAMES[")[1].split("};")[0]
    assert [part.split('"')[1] for part in listed.split(",") if '"' in part] == list(spec.names)
    assert f"#define ADVISOR_DOSE_INT8_FNV1A 0x{fnv1a(bundle.model_bytes('int8')):08x}u" in text
    assert "NOT a dose" in text and "safety supervisor" in text
    assert fnv1a(b"") == 0x811C9DC5 and fnv1a(b"a") == 0xE40C292C  # the published FNV-1a test values


@pytest.mark.e2e
@pytest.mark.parametrize("role", ["int8", "float"])
def test_the_package_checks_itself_and_holds_the_exact_model(tmp_path, gcc, role):
    out = tmp_path / "fw"
    result = CliRunner().invoke(main, ["export-c", "--out", str(out), "--model", role])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "advisor_check.c", f"advisor_dose_{role}.h", f"advisor_dose_{role}_golden.h"]
    )
    check = _build(gcc, out, "advisor_check.c", "advisor_check")
    report = check.stdout.decode()
    assert check.returncode == 0, report
    bundle = open_bundle(default_bundle_path("dose"))
    count = len(bundle.manifest.golden)
    assert f"{bundle.version}: {count} golden vectors, 0 failures" in report
    assert report.count("ok   vector") == count and "input 0 of 552 elements differ" in report

    (out / "bytes.c").write_text(BYTES_PROGRAM.replace("{role}", role).replace("{ROLE}", role.upper()))
    dump = _build(gcc, out, "bytes.c", "bytes")
    assert dump.returncode == 0 and dump.stdout == bundle.model_bytes(role)
    spec = bundle.feature_spec
    assert dump.stderr.decode().split() == [bundle.version, str(spec.window), str(spec.n_features), "reg_usual_units"]

    if platform.machine() == "x86_64":  # the tflite-micro wheel exists for x86-64 only (CI installs it)
        assert f"TFLite Micro: ran the {count} golden vectors" in result.output, result.output
    else:
        assert "TFLite Micro: not checked here" in result.output


@pytest.mark.e2e
def test_the_host_check_fails_on_a_damaged_header(tmp_path, gcc):
    out = tmp_path / "fw"
    assert CliRunner().invoke(main, ["export-c", "--out", str(out)]).exit_code == 0
    header = out / "advisor_dose_int8.h"
    text = header.read_text()
    at = text.index("0x", text.index("advisor_dose_int8[")) + 2  # the model's first byte
    header.write_text(text[:at] + ("00" if text[at : at + 2] != "00" else "01") + text[at + 2 :])
    bad_bytes = _build(gcc, out, "advisor_check.c", "advisor_check")
    assert bad_bytes.returncode == 1 and "FAIL model bytes" in bad_bytes.stdout.decode()

    means = text.index("advisor_dose_int8_mean[")
    first = text.index("\n", means) + 5
    number_end = text.index(",", first)
    header.write_text(text[:first] + "1000.0f" + text[number_end:])
    bad_scaling = _build(gcc, out, "advisor_check.c", "advisor_check")
    assert bad_scaling.returncode == 1 and "FAIL vector 0" in bad_scaling.stdout.decode()


def test_export_refuses_an_unverified_bundle_and_a_companion(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(default_bundle_path("dose"), broken)
    (broken / "dose_int8.tflite").write_bytes(b"tampered")
    result = CliRunner().invoke(main, ["export-c", str(broken), "--out", str(tmp_path / "fw")])
    assert result.exit_code == 1 and "Error:" in result.output and not (tmp_path / "fw").exists()
    from firmware_bridge.c_export import ExportError

    with pytest.raises(ExportError, match="companion model"):
        check_exportable(open_bundle(default_bundle_path("mortality")))
