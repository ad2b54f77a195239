"""Model bundles: open a directory or ``.tar.gz``, verify hashes and signature, read the manifest.

A bundle is ``manifest.json``, the ``.tflite`` file(s) it lists and ``signature.json``, a
detached Ed25519 signature over the exact bytes of ``manifest.json``. The manifest carries
the sha256 of every other file, so one signature covers the whole bundle.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from device.contract.manifest import Manifest, ManifestError
from device.models import signing
from domain.features import FeatureSpec
from domain.visits import KIND as VISIT_SEQUENCE
from domain.visits import VisitSpec

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # device/: default_bundles/ and keys/
DEFAULT_BUNDLES = PACKAGE_DIR / "default_bundles"
PACKAGED_KEYS = PACKAGE_DIR / "keys"


class BundleError(Exception):
    """A bundle cannot be used; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A verified bundle held in memory: manifest and file contents."""

    path: Path
    manifest: Manifest
    files: dict[str, bytes]
    signed_by: str | None
    manifest_sha256: str  # of manifest.json's exact bytes: which bundle this is

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec.from_json(self.manifest.features)

    @property
    def is_companion(self) -> bool:
        """A risk model over visit histories (mortality, readmission), not a dose model."""
        return is_companion_manifest(self.manifest)

    @property
    def visit_spec(self) -> VisitSpec:
        return VisitSpec.from_json(self.manifest.features)

    def model_bytes(self, role: str = "int8") -> bytes:
        """The ``.tflite`` bytes of a model role listed in the manifest's ``models``."""
        if role not in self.manifest.models:
            raise BundleError(f"bundle {self.name} has no {role} model")
        return self.files[self.manifest.models[role].file]


def is_companion_manifest(manifest: Manifest) -> bool:
    return manifest.features.get("kind") == VISIT_SEQUENCE


def default_bundle_path(name: str = "dose") -> Path:
    """Where the packaged default bundle of a model lives."""
    return DEFAULT_BUNDLES / name


def packaged_trusted_keys() -> list[signing.PublicKey]:
    """The project's release keys that ship with the package."""
    return [signing.load_public(p) for p in sorted(PACKAGED_KEYS.glob("*.pub"))]


def trusted_keys(extra: Iterable[Path] = ()) -> list[signing.PublicKey]:
    """The packaged release keys plus the public-key files in ``extra`` (``--trust``, config ``trust``)."""
    return packaged_trusted_keys() + [signing.load_public(p) for p in extra]


def _read_directory(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for item in sorted(path.iterdir()):
        if item.is_symlink() or not item.is_file():
            raise BundleError(f"{path}: unexpected entry {item.name!r} (bundles hold plain files only)")
        total += item.stat().st_size
        if total > MAX_BUNDLE_BYTES:
            raise BundleError(f"{path}: bundle larger than {MAX_BUNDLE_BYTES // 2**20} MiB")
        files[item.name] = item.read_bytes()
    return files


def read_archive_bytes(data: bytes, origin: str) -> dict[str, bytes]:
    """Files of a ``.tar.gz`` bundle held in memory; flat plain files only, size-limited."""
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                name = member.name.split("/", 1)[-1] if "/" in member.name else member.name
                if member.isdir():
                    continue
                if not member.isfile() or "/" in name or name in ("", ".", ".."):
                    raise BundleError(f"{origin}: unsafe archive entry {member.name!r}")
                total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise BundleError(f"{origin}: bundle larger than {MAX_BUNDLE_BYTES // 2**20} MiB")
                extracted = tar.extractfile(member)
                files[name] = extracted.read() if extracted else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{origin}: not a readable .tar.gz bundle ({exc})") from exc
    return files


def _read_files(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return _read_directory(path)
    if path.is_file():
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise BundleError(f"{path}: bundle larger than {MAX_BUNDLE_BYTES // 2**20} MiB")
        return read_archive_bytes(path.read_bytes(), str(path))
    raise BundleError(f"{path}: no such bundle")


def parse_manifest(raw: bytes, origin: str) -> Manifest:
    """Decode a manifest and check it against its schema (device/contract/manifest.py)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{origin}: manifest too large")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{origin}: manifest.json is not valid JSON ({exc})") from exc
    try:
        return Manifest.from_mapping(data)
    except ManifestError as exc:
        raise BundleError(f"{origin}: {exc}") from exc


def verify_files(
    files: dict[str, bytes], trusted: list[signing.PublicKey], origin: str, require_signature: bool = True
) -> tuple[Manifest, str | None]:
    """Check signature and hashes of a bundle's files; return the manifest and signer key id."""
    if MANIFEST not in files:
        raise BundleError(f"{origin}: no manifest.json")
    raw = files[MANIFEST]
    manifest = parse_manifest(raw, origin)
    signer: str | None = None
    if SIGNATURE in files:
        try:
            record = json.loads(files[SIGNATURE].decode("utf-8"))
            kid, signature = signing.decode_signature(record)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            raise BundleError(f"{origin}: signature.json is malformed ({exc})") from exc
        key = next((k for k in trusted if k.key_id == kid), None)
        if key is None:
            raise BundleError(f"{origin}: signed by unknown key {kid}; not in the trusted keys")
        if not key.verify(signature, raw):
            raise BundleError(f"{origin}: bad signature (manifest does not match its signature)")
        signer = kid
    elif require_signature:
        raise BundleError(f"{origin}: bundle is not signed (no signature.json)")
    listed = manifest.files
    for name, entry in listed.items():
        if name not in files:
            raise BundleError(f"{origin}: file {name} listed in the manifest is missing")
        if entry.sha256 != hashlib.sha256(files[name]).hexdigest():
            raise BundleError(f"{origin}: sha256 mismatch for {name}")
    extra = set(files) - set(listed) - {MANIFEST, SIGNATURE}
    if extra:
        raise BundleError(f"{origin}: files not listed in the manifest: {', '.join(sorted(extra))}")
    try:
        if is_companion_manifest(manifest):
            VisitSpec.from_json(manifest.features)
        else:
            FeatureSpec.from_json(manifest.features)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{origin}: feature spec unusable ({exc})") from exc
    return manifest, signer


def open_bundle(path: Path, trusted: list[signing.PublicKey] | None = None, require_signature: bool = True) -> Bundle:
    """Read and verify a bundle; trusted keys default to the packaged release keys."""
    path = Path(path)
    keys = packaged_trusted_keys() if trusted is None else trusted
    files = _read_files(path)
    manifest, signer = verify_files(files, keys, str(path), require_signature)
    return Bundle(path, manifest, files, signer, hashlib.sha256(files[MANIFEST]).hexdigest())


def open_archive_bytes(data: bytes, origin: str, trusted: list[signing.PublicKey]) -> Bundle:
    """Verify a ``.tar.gz`` bundle held in memory (as received over the air)."""
    files = read_archive_bytes(data, origin)
    manifest, signer = verify_files(files, trusted, origin, True)
    return Bundle(Path(origin), manifest, files, signer, hashlib.sha256(files[MANIFEST]).hexdigest())


def pack_archive(path: Path) -> bytes:
    """A bundle as ``.tar.gz`` bytes: a directory is packed (flat, fixed order and times)."""
    path = Path(path)
    if path.is_file():
        return path.read_bytes()
    files = _read_directory(path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def version_key(version: str) -> tuple:
    """Order bundle versions: dotted numbers numerically (``2026.11.21.165610``), else as text."""
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return (0, tuple(int(p) for p in parts))
    return (1, version)


def sign_bundle_dir(path: Path, private_key_path: Path) -> str:
    """Write ``signature.json`` for a bundle directory; return the signing key id."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path}: not a bundle directory (no manifest.json)")
    private = signing.load_private(private_key_path)
    record = signing.sign(private, (path / MANIFEST).read_bytes())
    (path / SIGNATURE).write_text(json.dumps(record, indent=2) + "\n")
    return record["key_id"]


def info(bundle: Bundle) -> dict:
    """What ``advisor bundle info`` prints: the manifest plus where the bundle is."""
    out = json.loads(bundle.files[MANIFEST])
    out["path"] = str(bundle.path.resolve())
    out["manifest_sha256"] = bundle.manifest_sha256
    out["signed_by"] = bundle.signed_by
    return out
