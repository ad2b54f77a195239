"""Shared fixtures: real data from ../shared (or $ADVISOR_AIM94_DIR); in CI, absence fails.

Markers tell the truth: a test that uses a real broker or Chromium is marked ``e2e`` at
collection, and any other test that starts a process or opens a network socket fails unless it
is marked ``e2e`` itself; ``slow`` marks tests that train networks or search long. ``-m "not e2e and not slow"``
is the fast loop of pure logic.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = ROOT / "test-artifacts"
E2E_FIXTURES = {"mosquitto", "browser", "chromium"}  # a real Mosquitto process, a real Chromium

# Probes libraries make once, on import, are not a test's own process or network use: make them
# here, before any test, whichever test happens to import the library first.
platform.processor()  # runs `uname -p` once (TensorFlow's import asks for it); cached from here on
if importlib.util.find_spec("urllib3"):  # present with the training extras (via requests), not declared
    importlib.import_module("urllib3")  # its import checks for IPv6 by binding ::1 port 0
if importlib.util.find_spec("joblib"):  # scikit-learn's; counts physical cores with `cat /proc/cpuinfo`
    importlib.import_module("joblib").cpu_count(only_physical_cores=True)  # once, cached from here on
# Training runs are recorded with MLflow: each test process gets its own store, never ./mlruns.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='advisor-mlruns-')}/mlflow.db")
if importlib.util.find_spec("git"):  # GitPython (MLflow's) runs `git version` on import
    importlib.import_module("git")
if importlib.util.find_spec("matplotlib"):  # its first import on a machine lists fonts with `fc-list`
    importlib.import_module("matplotlib.font_manager")  # and caches them (~/.cache/matplotlib)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use a real process ``e2e``; run the ``slow`` ones first, so that with parallel
    workers (``-n``, as tests/run.sh runs) the longest start at once and the rest fill in beside them."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _only_e2e_tests_start_processes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test not marked ``e2e`` that starts a process or opens a network socket fails, naming what it
    did (a socket opened on another thread, where the refusal may be swallowed, fails it at the end)."""
    if request.node.get_closest_marker("e2e") is not None:
        yield
        return

    def refuse(self: subprocess.Popen, args: object, *rest: object, **options: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a process ({str(args)[:120]}); mark it e2e")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    opened: list[str] = []
    for method in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(
            socket.socket, method, _no_network(request.node.nodeid, opened, getattr(socket.socket, method))
        )
    yield
    assert not opened, opened[0]


def _no_network(test: str, opened: list[str], method: Callable[..., object]) -> Callable[..., object]:
    """``method`` of a socket, refused for a network address: the fast loop opens no connection or port."""

    def guarded(self: socket.socket, address: object, *rest: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            opened.append(f"{test} opens a network socket ({method.__name__} {address!r}); mark it e2e")
            raise AssertionError(opened[-1])
        return method(self, address, *rest)

    return guarded


def _data_dir(env: str, default: Path, what: str) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.is_dir():
        message = f"{what} not found at {path} (set {env})"
        if IN_CI:
            pytest.fail(message + " — CI requires the real data", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def aim94_dir() -> Path:
    return _data_dir("ADVISOR_AIM94_DIR", ROOT.parent / "shared" / "data" / "aim94", "AIM-94 data")


@pytest.fixture(scope="session")
def aim94_logs(aim94_dir):
    from preprocessing import aim94

    return aim94.read_folder(aim94_dir)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture()
def mosquitto(tmp_path):
    """A real Mosquitto on a free loopback port with persistence; stopped after the test."""
    from tools.ward.broker import MosquittoBroker, mosquitto_path

    if mosquitto_path() is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if IN_CI:
            pytest.fail(message + " — CI requires it", pytrace=False)
        pytest.skip(message)
    broker = MosquittoBroker(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mimic_dir() -> Path:
    return _data_dir("ADVISOR_MIMIC_DIR", ROOT.parent / "shared" / "data" / "mimic-iii-demo", "MIMIC-III demo")


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class _CheckedBrowser:
    """The session's Chromium, whose pages record every uncaught script error (a broken page fails its test)."""

    def __init__(self, browser) -> None:
        self._browser = browser
        self.errors: list[str] = []

    def _watch(self, page):
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        return page

    def new_page(self, **options):
        return self._watch(self._browser.new_page(**options))

    def new_context(self, **options):
        context = self._browser.new_context(**options)
        context.on("page", self._watch)
        return context


@pytest.fixture()
def browser(chromium):
    """Chromium for one test; it fails if any page it opened threw a script error."""
    checked = _CheckedBrowser(chromium)
    yield checked
    assert checked.errors == [], "script errors on the page: " + "; ".join(checked.errors)


@pytest.fixture(scope="session")
def chromium():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    if not shutil.which("chromium"):
        missing = "chromium is not installed (apt-get install chromium)"
    if missing:
        if IN_CI:
            pytest.fail(missing + " — CI requires it", pytrace=False)
        pytest.skip(missing)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture()
def bedside(mosquitto, tmp_path):
    """A device process (id ``bed2``) on the real broker, a sensor publishing to it and a watcher of its answers."""
    from device.config import BrokerConfig
    from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

    from .device_process import DeviceProcess
    from .page_kit import DEVICE

    broker = BrokerConfig(url=mosquitto.url)
    device = DeviceProcess(tmp_path / "state", mosquitto.url, DEVICE).start()
    publisher = EventPublisher(broker, DEVICE, client_id="page-sensor")
    watcher = DeviceWatcher(broker, DEVICE)
    publisher.wait_connected()
    assert watcher.subscribed.wait(5)
    yield device, publisher, watcher
    publisher.close()
    watcher.close()
    device.stop()
