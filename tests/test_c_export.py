"""``advisor export-c``: a C compiler proves the header's bytes are the bundle's .tflite file."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner

from device.bundle import default_bundle_path, open_bundle
from tools.cli import main

from .conftest import IN_CI

PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include "model.h"
int main(void) {
    if (((uintptr_t)advisor_dose_{role}) % 16 != 0) { fprintf(stderr, "not aligned\n"); return 2; }
    if (sizeof(advisor_dose_{role}) != advisor_dose_{role}_len) { fprintf(stderr, "bad length\n"); return 3; }
    fprintf(stderr, "%s %d %d\n", ADVISOR_DOSE_{ROLE}_VERSION, ADVISOR_DOSE_{ROLE}_WINDOW,
            ADVISOR_DOSE_{ROLE}_FEATURES);
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


@pytest.mark.e2e
@pytest.mark.parametrize("role", ["int8", "float"])
def test_compiled_header_holds_the_exact_model(tmp_path, gcc, role):
    result = CliRunner().invoke(main, ["export-c", "--out", str(tmp_path / "model.h"), "--model", role])
    assert result.exit_code == 0, result.output
    source = tmp_path / "main.c"
    source.write_text(PROGRAM.replace("{role}", role).replace("{ROLE}", role.upper()))
    subprocess.run(
        [gcc, "-std=c11", "-Wall", "-Werror", "-O1", "-o", str(tmp_path / "prog"), str(source)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    run = subprocess.run([str(tmp_path / "prog")], capture_output=True, check=True)
    bundle = open_bundle(default_bundle_path("dose"))
    assert run.stdout == bundle.model_bytes(role)
    spec = bundle.feature_spec
    assert run.stderr.decode().split() == [bundle.version, str(spec.window), str(spec.n_features)]


def test_export_refuses_an_unverified_bundle(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(default_bundle_path("dose"), broken)
    (broken / "dose_int8.tflite").write_bytes(b"tampered")
    result = CliRunner().invoke(main, ["export-c", str(broken), "--out", str(tmp_path / "m.h")])
    assert result.exit_code == 1 and "Error:" in result.output and not (tmp_path / "m.h").exists()
