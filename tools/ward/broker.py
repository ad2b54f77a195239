"""A local MQTT broker for the demo and the tests: Mosquitto if installed, else an embedded one.

Mosquitto runs as a child process on a loopback port with on-disk persistence, so it can be
stopped and started again without losing queued QoS 1 messages. The embedded fallback is
amqtt (MQTT 3.1.1 only) in a background thread, for machines without Mosquitto.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class BrokerStartError(RuntimeError):
    """The broker did not come up; the message says why."""


BIND_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerStartError(f"nothing answered on {host}:{port} within {timeout_s:g} s")


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


@dataclass
class MosquittoBroker:
    """A Mosquitto child process with persistence in ``workdir``; restartable on the same port."""

    workdir: Path
    port: int | None = None  # None: a free loopback port, chosen at start (again if another process takes it first)
    extra_config: str = ""
    process: subprocess.Popen | None = None
    protocol: str = "5"
    config_file: Path | None = None  # a complete configuration (e.g. a deployment profile) to run instead

    @property
    def url(self) -> str:
        if self.port is None:
            raise BrokerStartError("the broker has no port before it starts")
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.config_file is not None:
            return self.config_file
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # as root, stay root so the persistence file in workdir is writable
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            "set_tcp_nodelay true\n"
            f"{self.extra_config}"
        )
        return conf

    def start(self) -> MosquittoBroker:
        """Start, and return once this process listens. A port chosen here that another process takes
        between the choice and the bind is chosen again; a given port is kept (restarts, profiles)."""
        exe = mosquitto_path()
        if exe is None:
            raise BrokerStartError("mosquitto is not installed (apt-get install mosquitto)")
        choose = self.port is None
        log_path = self.workdir / "mosquitto.log"
        for _ in range(BIND_ATTEMPTS if choose else 1):
            if choose:
                self.port = free_port()
            conf = self._write_config()
            offset = log_path.stat().st_size if log_path.exists() else 0
            with open(log_path, "ab") as log:
                self.process = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
            if self._listening(log_path, offset, own_log=choose):
                return self
            taken = b"Address already in use" in log_path.read_bytes()[offset:]
            self.stop()
            if not taken:
                break
        raise BrokerStartError(f"mosquitto did not start on port {self.port}; see {log_path}")

    def _listening(self, log_path: Path, offset: int, own_log: bool, timeout_s: float = 10.0) -> bool:
        """Whether this process came up: it logged that it runs (``own_log``: required, so a port that
        another broker took is not mistaken for ours) and the port answers; False once it exits."""
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            running = b" running" in log_path.read_bytes()[offset:]
            if running or not own_log:
                try:
                    wait_for_port(self.port, max(0.1, deadline - time.monotonic()))
                except BrokerStartError:
                    return False
                return self.process.poll() is None
            time.sleep(0.02)
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop cleanly (SIGTERM: Mosquitto writes its persistence file)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop cleanly and start again on the same port (tests of a broker restart)."""
        self.stop()
        self.start()


@dataclass
class EmbeddedBroker:
    """amqtt in a background thread (MQTT 3.1.1), when Mosquitto is not installed."""

    port: int = field(default_factory=free_port)
    protocol: str = "3.1.1"
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _broker: Any = None  # amqtt.broker.Broker (amqtt ships no type information)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker  # type: ignore[import-untyped]
        except ImportError:
            raise BrokerStartError(
                "no MQTT broker: install Mosquitto (apt-get install mosquitto) or the demo extra "
                "(pip install 'insulin-advisor[demo]')"
            ) from None
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        loop = self._loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to the caller below
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="embedded-broker", daemon=True)
        self._thread.start()
        if not started.wait(15):
            raise BrokerStartError("the embedded broker did not start within 15 s")
        if errors:
            raise BrokerStartError(f"the embedded broker did not start: {errors[0]}")
        return self  # listening: Broker.start() returns once its listeners are bound

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None


def start_local_broker(workdir: Path | None = None) -> MosquittoBroker | EmbeddedBroker:
    """Mosquitto if installed, otherwise the embedded broker."""
    if mosquitto_path() is not None:
        return MosquittoBroker(workdir or Path(tempfile.mkdtemp(prefix="advisor-mosquitto-"))).start()
    return EmbeddedBroker().start()
