"""Run ``advisor device run`` as a real child process, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from device.config import BrokerConfig
from device.contract.messages import (
    ActionDone,
    ApiError,
    Message,
    PageSession,
    PageStatus,
    PatientList,
    PatientView,
    Risk,
    SignedIn,
    SignIn,
)
from tools.mqtt_kit.client import DeviceWatcher, EventPublisher

PAGE_ADDRESS = re.compile(r"bedside page at http://[^/\s]+:(\d+)/")
PAGE_ADDRESS_WAIT_S = 20.0


class DeviceProcess:
    """One device process; ``start`` waits until its page reports the broker subscription ready."""

    def __init__(
        self,
        state_dir: Path,
        broker_url: str,
        device_id: str = "bed1",
        clock: str = "wall",
        python: str = sys.executable,
        extra: tuple[str, ...] = (),
        env: dict | None = None,
        launcher: tuple[str, ...] = ("-m", "tools.cli.main"),
    ) -> None:
        """``launcher``: how Python runs the CLI (tests.faulty_device: with a power cut during an install)."""
        self.state_dir = state_dir
        self.broker_url = broker_url
        self.device_id = device_id
        self.clock = clock
        self.python = python
        self.extra = extra
        self.env = env or {}
        self.launcher = launcher
        self.process: subprocess.Popen | None = None
        self.log = state_dir.parent / f"device-{device_id}.log"
        self._port: int | None = None  # the page's port, as the running process says it bound it
        self._log_from = 0

    @property
    def port(self) -> int:
        """The page's port: the process binds port 0 and logs the address it got (read once per launch)."""
        if self._port is None:
            deadline = time.monotonic() + PAGE_ADDRESS_WAIT_S
            while self._port is None:
                found = PAGE_ADDRESS.search(self.log.read_bytes()[self._log_from :].decode(errors="replace"))
                if found is not None:
                    self._port = int(found.group(1))
                elif time.monotonic() > deadline or (self.process is not None and self.process.poll() is not None):
                    raise OSError(f"the device logged no page address: {self.log.read_text()[-2000:]}")
                else:
                    time.sleep(0.02)
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return [
            self.python,
            *self.launcher,
            "device",
            "run",
            "--broker",
            self.broker_url,
            "--device-id",
            self.device_id,
            "--http",
            "127.0.0.1:0",
            "--state-dir",
            str(self.state_dir),
            "--clock",
            self.clock,
            *self.extra,
        ]

    def launch(self) -> DeviceProcess:
        """Spawn the process and return at once."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._port, self._log_from = None, self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).resolve().parents[1]
            )
        return self

    def start(self, timeout_s: float = 20.0) -> DeviceProcess:
        """Spawn the process and wait until its page reports it online."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"device exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if self.status().state == "online":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"device not ready within {timeout_s:g} s: {self.log.read_text()[-2000:]}")

    def status(self) -> PageStatus:
        with urllib.request.urlopen(self.url + "api/status", timeout=2) as response:
            return PageStatus.from_json(response.read())

    def view(self, patient: str, session: str | None = None) -> PatientView:
        """The page's view of a patient; with a signed-in ``session``, as that user sees it."""
        request = urllib.request.Request(f"{self.url}api/patients/{patient}", headers=_session_header(session))
        with urllib.request.urlopen(request, timeout=5) as response:
            return PatientView.from_json(response.read())

    def patients(self) -> PatientList:
        with urllib.request.urlopen(self.url + "api/patients", timeout=5) as response:
            return PatientList.from_json(response.read())

    def session(self) -> str:
        """A page session token, as the page gets one."""
        with urllib.request.urlopen(self.url + "api/session", timeout=5) as response:
            return PageSession.from_json(response.read()).token

    def add_user(self, name: str, role: str, pin: str, patient: str | None = None) -> None:
        """``advisor users add`` on this device's state directory (the running device sees it at once)."""
        tie = ["--patient", patient] if patient else []
        done = subprocess.run(
            [self.python, "-m", "tools.cli.main", "users", "add", name, "--role", role, *tie, "--pin-stdin",
             "--state-dir", str(self.state_dir)],
            input=pin + "\n", capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    def signed_in(self, user: str, pin: str) -> str:
        """A page session with ``user`` signed in."""
        token = self.session()
        status, answer = self.post("api/sign-in", SignIn(user, pin), session=token)
        assert status == 200, answer
        return token

    def post(
        self,
        path: str,
        body: Message | bytes,
        token: str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        session: str | None = None,
    ) -> tuple[int, ActionDone | SignedIn | Risk | ApiError]:
        """A page action as the page sends it (with a new session token unless ``session`` or ``headers`` give one).

        Returns the HTTP status and the typed answer; ``body`` may be raw bytes for hostile-input tests.
        """
        headers = {"Content-Type": content_type, "X-Advisor-Session": session or self.session(), **(headers or {})}
        if token is not None:
            headers["X-Advisor-Token"] = token
        data = body.to_json() if isinstance(body, Message) else body
        request = urllib.request.Request(self.url + path.lstrip("/"), data, headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                raw = response.read()
                answer = SignedIn if "sign-" in path else Risk if path.endswith("api/risk") else ActionDone
                return response.status, answer.from_json(raw)
        except urllib.error.HTTPError as exc:
            return exc.code, ApiError.from_json(exc.read())

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 15.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _session_header(session: str | None) -> dict[str, str]:
    return {"X-Advisor-Session": session} if session else {}


def assert_repeats_identical(watcher) -> None:
    """An answer that came twice is the same answer under the same id (delivery is at least once)."""
    first: dict[str, object] = {}
    for s in watcher.suggestions:
        assert first.setdefault(s.id, s) == s, f"{s.id} repeated with a different answer"


@contextmanager
def configured_device(
    broker_url: str, folder: Path, device_id: str, config_text: str, clock: str = "event"
) -> Iterator[tuple[DeviceProcess, EventPublisher, DeviceWatcher]]:
    """A device process run with ``config_text`` as its config file, a sensor publishing to it and a
    watcher of its answers, both connected; everything stopped afterwards."""
    config = folder / "device.toml"
    config.write_text(config_text)
    device = DeviceProcess(folder / "state", broker_url, device_id, clock=clock, extra=("--config", str(config)))
    device.start()
    broker = BrokerConfig(url=broker_url)
    publisher = EventPublisher(broker, device_id)
    watcher = DeviceWatcher(broker, device_id)
    try:
        publisher.wait_connected()
        assert watcher.subscribed.wait(5)
        yield device, publisher, watcher
    finally:
        publisher.close()
        watcher.close()
        device.stop()
