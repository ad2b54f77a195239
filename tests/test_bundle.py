"""Bundle verification: signature, hashes, listed files, archives; keys and the bundle CLI."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import tarfile

import pytest
from click.testing import CliRunner

from device.models import bundle as bundle_mod
from device.models import signing
from tools.cli.main import main


@pytest.fixture()
def keys(tmp_path):
    private, public = signing.generate(tmp_path / "keys")
    return private, public


@pytest.fixture()
def signed(tmp_path, keys):
    """A copy of the packaged dose bundle re-signed with a test key."""
    path = tmp_path / "dose"
    shutil.copytree(bundle_mod.default_bundle_path("dose"), path)
    (path / bundle_mod.SIGNATURE).unlink()
    bundle_mod.sign_bundle_dir(path, keys[0])
    return path


def _trusted(keys):
    return [signing.load_public(keys[1])]


def test_signed_bundle_verifies(signed, keys):
    b = bundle_mod.open_bundle(signed, _trusted(keys))
    assert b.name == "dose" and b.signed_by == signing.load_public(keys[1]).key_id
    assert bundle_mod.info(b)["path"] == str(signed.resolve())


def test_unsigned_bundle_is_refused(signed, keys):
    (signed / bundle_mod.SIGNATURE).unlink()
    with pytest.raises(bundle_mod.BundleError, match="not signed"):
        bundle_mod.open_bundle(signed, _trusted(keys))


def test_unknown_key_is_refused(signed, tmp_path):
    _, other_pub = signing.generate(tmp_path / "other")
    with pytest.raises(bundle_mod.BundleError, match="unknown key"):
        bundle_mod.open_bundle(signed, [signing.load_public(other_pub)])


def test_edited_manifest_breaks_signature(signed, keys):
    manifest = json.loads((signed / "manifest.json").read_text())
    manifest["version"] = "9999.01.01.000000"
    (signed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(bundle_mod.BundleError, match="bad signature"):
        bundle_mod.open_bundle(signed, _trusted(keys))


def test_corrupted_model_file_fails_hash(signed, keys):
    model = signed / "dose_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(bundle_mod.BundleError, match=r"sha256 mismatch for dose_int8\.tflite"):
        bundle_mod.open_bundle(signed, _trusted(keys))


def test_missing_and_extra_files(signed, keys):
    (signed / "extra.bin").write_bytes(b"x")
    with pytest.raises(bundle_mod.BundleError, match="not listed"):
        bundle_mod.open_bundle(signed, _trusted(keys))
    (signed / "extra.bin").unlink()
    (signed / "dose_float.tflite").unlink()
    with pytest.raises(bundle_mod.BundleError, match="missing"):
        bundle_mod.open_bundle(signed, _trusted(keys))


def test_garbage_manifest_and_signature(signed, keys):
    (signed / bundle_mod.SIGNATURE).write_text("{not json")
    with pytest.raises(bundle_mod.BundleError, match=r"signature\.json is malformed"):
        bundle_mod.open_bundle(signed, _trusted(keys))
    (signed / "manifest.json").write_bytes(b"\xff\xfe")
    with pytest.raises(bundle_mod.BundleError, match="not valid JSON"):
        bundle_mod.open_bundle(signed, _trusted(keys))


def _resigned(path, keys, edit) -> None:
    """Edit the manifest as a careless training run would, then sign it properly."""
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    bundle_mod.sign_bundle_dir(path, keys[0])


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: m["models"]["int8"].update(colour="red"), r"unknown key\(s\): models\.int8\.colour"),
        (lambda m: m["models"]["int8"]["input"].update(scale="big"), r"models\.int8\.input\.scale must be a number"),
        (lambda m: m.pop("output"), "missing key 'output'"),
        (lambda m: m.update(format=2), "manifest format 2 is not supported"),
        (lambda m: m["models"]["int8"].update(file="other.tflite"), "model 'int8' names a file the manifest does not"),
        (lambda m: m["golden"][0].update(outputs={"int8": "eight"}), r"golden\[0\]\.outputs\.int8 must be a number"),
    ],
)
def test_a_signed_manifest_that_does_not_fit_its_schema_is_refused_by_name(signed, keys, edit, reason):
    _resigned(signed, keys, edit)
    with pytest.raises(bundle_mod.BundleError, match=reason):
        bundle_mod.open_bundle(signed, _trusted(keys))


def test_the_manifest_is_typed_and_its_hash_is_of_the_signed_bytes(signed, keys):
    opened = bundle_mod.open_bundle(signed, _trusted(keys))
    raw = (signed / "manifest.json").read_bytes()
    assert opened.manifest_sha256 == hashlib.sha256(raw).hexdigest()
    int8 = opened.manifest.models["int8"]
    assert int8.input.dtype == "int8" and int8.input.shape == [1, opened.feature_spec.window, 46]
    assert opened.manifest.output.residual_of == "reg_usual_units"
    assert len(opened.manifest.golden) >= 3 and all(len(g.input or []) == 12 for g in opened.manifest.golden)


def test_training_cannot_write_a_manifest_the_device_would_refuse(signed, tmp_path):
    from device.contract.manifest import ManifestError
    from model import bundle_writer

    manifest = json.loads((signed / "manifest.json").read_text())
    manifest["output"]["device_role"] = "fp16"
    with pytest.raises(ManifestError, match=r"output\.device_role must be one of int8, float"):
        bundle_writer.write_bundle(tmp_path / "out", manifest, {"dose_int8.tflite": b"", "dose_float.tflite": b""})
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def _tar(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_tar_gz_bundle_round_trip(signed, keys, tmp_path):
    archive = tmp_path / "dose.tar.gz"
    archive.write_bytes(_tar({f"dose/{p.name}": p.read_bytes() for p in signed.iterdir()}))
    b = bundle_mod.open_bundle(archive, _trusted(keys))
    assert b.version == bundle_mod.open_bundle(signed, _trusted(keys)).version


def test_tar_gz_with_unsafe_entry_is_refused(signed, keys, tmp_path):
    entries = {p.name: p.read_bytes() for p in signed.iterdir()}
    entries["../../etc/evil"] = b"x"
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar(entries))
    with pytest.raises(bundle_mod.BundleError, match="unsafe archive entry"):
        bundle_mod.open_bundle(archive, _trusted(keys))
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(bundle_mod.BundleError, match="not a readable"):
        bundle_mod.open_bundle(tmp_path / "junk.tar.gz", _trusted(keys))


def test_keygen_writes_private_key_mode_600_and_never_overwrites(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["keygen", "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    mode = stat.S_IMODE((tmp_path / "k" / "advisor.key").stat().st_mode)
    assert mode == 0o600
    assert (tmp_path / "k" / "advisor.pub").read_text().startswith("-----BEGIN PUBLIC KEY")
    again = runner.invoke(main, ["keygen", "--out", str(tmp_path / "k")])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output


def test_cli_sign_then_info(tmp_path, keys, signed):
    (signed / bundle_mod.SIGNATURE).unlink()
    runner = CliRunner()
    refused = runner.invoke(main, ["bundle", "info", str(signed), "--trust", str(keys[1])])
    assert refused.exit_code == 1 and "not signed" in refused.output
    assert "Traceback" not in refused.output
    signed_out = runner.invoke(main, ["bundle", "sign", str(signed), "--key", str(keys[0])])
    assert signed_out.exit_code == 0, signed_out.output
    shown = runner.invoke(main, ["bundle", "info", str(signed), "--json", "--trust", str(keys[1])])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["path"] == str(signed.resolve()) and data["name"] == "dose"


def test_cli_info_defaults_to_packaged_bundle():
    result = CliRunner().invoke(main, ["bundle", "info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["path"] == str(bundle_mod.default_bundle_path("dose").resolve())
