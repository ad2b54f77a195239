"""``advisor doctor``: check one device end to end; say what is wrong and how to fix it.

The checks, in order (a check that cannot run because an earlier one failed is skipped):

1. **reachable** — a TCP connection to the broker's host and port;
2. **TLS** — the handshake with the given CA, the names and expiry of the broker's certificate
   (with an mqtt:// URL: whether the port speaks TLS all the same, a listener plain MQTT cannot use);
3. **credentials** — each role's user logs in (from ``credentials.txt``, or the URL's user);
4. **status** — the device's retained status: online, its models and versions, its problems;
5. **answer** — a probe event (dated 2999, so every device refuses it and stores nothing) goes
   in as a sensor sends events, and the device's refusal comes back on ``errors``;
6. **clock** — the device's clock against this computer's, from the refusal's ``at`` (skipped for a
   device on the event clock, a log replay or the demo, whose time is its events' time);
7. **access** — with ``credentials.txt``: each role can do its job and no more (a sensor may not
   flash or read, a monitor may not write, the flasher is answered by the device).

The probes are harmless even where the ACL is too open: the device refuses every one.
Interpreting answers (:func:`status_finding`, :func:`clock_finding`, :func:`certificate_finding`)
is pure; :func:`examine` does the I/O.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from device.config import BrokerConfig
from device.contract.messages import DeviceStatus, ErrorMessage, ModelAck, TransferEnd
from device.contract.schema import SchemaError
from device.contract.topics import Topics
from device.mqtt.client import describe_connect_failure, describe_refusal, make_client
from domain.limits import FUTURE_TOLERANCE_S
from tools.ward.broker_profile import Credential

CLOCK_LIMIT_S = 60.0  # more than this apart and the page's times and "stale reading" rules mislead
CERT_WARN_DAYS = 30
PROBE_TS = "2999-01-01T00:00:00+00:00"  # far in the future: refused by validation, never stored
NOT_AUTHORIZED = "Not authorized"
EVENT_CLOCK = "the device runs on the event clock (log replay); its time is the events' time"


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``ok`` True/False, or None when it was not checked."""

    check: str
    ok: bool | None
    detail: str
    fix: str | None = None

    def lines(self) -> list[str]:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        out = [f"{mark}  {self.check:<14} {self.detail}"]
        if self.fix:
            out.append(f"      {'':<14} fix: {self.fix}")
        return out


# ----------------------------------------------------------------------------- pure verdicts
def certificate_finding(cert: dict, host: str, now: datetime) -> Finding:
    """The broker's certificate, already verified by the handshake: its names and expiry."""
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    days = (expires - now).days
    detail = f"certificate for {', '.join(names) or host}, trusted, valid until {expires.date()} ({days} days)"
    if days < CERT_WARN_DAYS:
        return Finding(
            "TLS",
            False,
            detail,
            "renew the server certificate before it expires (advisor broker-profile writes a new one)",
        )
    return Finding("TLS", True, detail)


def status_finding(status: DeviceStatus | None, topic: str, reader: str, expect_version: str | None) -> Finding:
    """What the device's retained status says: online with a model, or what to do."""
    if status is None:
        return Finding(
            "status",
            False,
            f"no status on {topic}: the device has never connected to this broker under this id, "
            f"or {reader} may not read it",
            "start the device (sudo systemctl start advisor) and check its device_id and broker settings "
            "(journalctl -u advisor); with --credentials, see the access lines below",
        )
    models = ", ".join(f"{m.name} {m.version or '(none)'}" for m in status.models) or "no dose model"
    risk = ", ".join(f"{name} {info.version}" for name, info in status.risk_models.items())
    detail = f"{status.state}: {models}" + (f"; risk {risk}" if risk else "") + f"; timezone {status.timezone}"
    if status.state != "online":
        why = "the broker published its last will: the device lost its connection" if status.state == "offline" else ""
        return Finding(
            "status",
            False,
            f"{detail} ({why or 'still starting'})",
            "check the device: sudo systemctl status advisor; journalctl -u advisor -n 50",
        )
    if status.model_problem:
        return Finding(
            "status",
            False,
            f"{detail}: {status.model_problem}",
            f"flash a signed dose bundle: advisor flash BUNDLE --device {status.device_id} --broker …",
        )
    if status.storage_problem:
        return Finding(
            "status",
            False,
            f"{detail}: {status.storage_problem}",
            "free space on the device's state folder or replace the SD card; the device suggests from memory meanwhile",
        )
    running = next((m.version for m in status.models if m.name == "dose"), None)
    if expect_version and running != expect_version:
        return Finding(
            "status",
            False,
            f"{detail}: runs dose {running}, expected {expect_version}",
            f"flash the expected bundle: advisor flash BUNDLE --device {status.device_id} --broker …",
        )
    return Finding("status", True, detail)


def clock_finding(device_at: datetime, sent: datetime, received: datetime, clock_mode: str | None) -> Finding:
    """The device's clock against this computer's, from an answer's ``at`` (± half the round trip).

    A device on the event clock (a log replay, the demo) decides by its events' times, so its
    time is not checked; its wall clock still is, as it dates answers and refuses future readings by it.
    """
    middle = sent + (received - sent) / 2
    skew = (device_at - middle).total_seconds()
    error = (received - sent).total_seconds() / 2
    direction = "ahead of" if skew > 0 else "behind"
    detail = f"the device is {_duration(abs(skew))} {direction} this computer (±{error * 1000:.0f} ms)"
    if abs(skew) > CLOCK_LIMIT_S:
        refused = (
            f"; beyond {FUTURE_TOLERANCE_S / 60:g} min a correct sensor's readings are refused as 'in the future'"
            if skew < 0
            else ""
        )
        return Finding(
            "clock",
            False,
            detail + refused,
            "turn on time synchronisation on the device and on this computer (sudo timedatectl set-ntp true) "
            "and check the ward's NTP server",
        )
    if clock_mode == "event":
        return Finding("clock", None, f"{EVENT_CLOCK}; its wall clock: {detail}")
    return Finding("clock", True, detail)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 120 else f"{seconds / 3600:.1f} h"


def speaks_tls(host: str, port: int, timeout_s: float) -> bool:
    """Whether the listener at host:port answers a TLS handshake (its certificate is not checked here).

    A plain MQTT listener hangs up on the handshake's first bytes; a TLS one answers, or refuses
    in TLS (an alert, e.g. for a missing client certificate).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in str(exc.reason or "").upper()
    except OSError:
        return False


def probe_event(nonce: str) -> bytes:
    """An event every device refuses at validation (its time is in 2999): nothing is stored."""
    return json.dumps(
        {"id": f"doctor-{nonce}", "patient": "doctor-probe", "kind": "glucose", "ts": PROBE_TS, "mg_dl": 100}
    ).encode()


# ----------------------------------------------------------------------------- I/O
class Session:
    """One short MQTT connection for a check: login result, messages received, PUBACK reasons."""

    def __init__(self, broker: BrokerConfig, name: str, topics: tuple[str, ...] = ()) -> None:
        self.topics = topics
        self.connack: str | None = None
        self.subscribed = not topics
        self.messages: list[tuple[str, bytes, datetime]] = []
        self.acks: dict[int, str] = {}
        self._changed = threading.Condition()
        self.client = make_client(broker, f"advisor-doctor-{name}-{time.monotonic_ns():x}", persistent=False)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(60, 60)  # one attempt: a diagnosis, not a service
        self.client.connect(broker.host, broker.port, 30)  # raises OSError / ssl.SSLError
        self.client.loop_start()

    def _notify(self, change: Callable[[], None]) -> None:
        with self._changed:
            change()
            self._changed.notify_all()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        def change() -> None:
            self.connack = str(reason_code)
            if not reason_code.is_failure and self.topics:
                client.subscribe([(t, 1) for t in self.topics])

        self._notify(change)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._notify(lambda: setattr(self, "subscribed", True))

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self._notify(lambda: self.messages.append((message.topic, bytes(message.payload), datetime.now(UTC))))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._notify(lambda: self.acks.__setitem__(mid, str(reason_code)))

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout_s)

    def logged_in(self, timeout_s: float) -> str | None:
        """None when the broker accepted the login, else why not."""
        if not self.wait(lambda: self.connack is not None, timeout_s):
            return "the broker did not answer the login"
        if self.connack != "Success":
            return describe_refusal(str(self.connack))
        self.wait(lambda: self.subscribed, timeout_s)
        return None

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> str | None:
        """Publish at QoS 1; the broker's PUBACK reason ("Success", "Not authorized"), or None."""
        info = self.client.publish(topic, payload, qos=1)
        self.wait(lambda: info.mid in self.acks, timeout_s)
        return self.acks.get(info.mid)

    def received(self, topic: str) -> list[tuple[bytes, datetime]]:
        with self._changed:
            return [(payload, at) for t, payload, at in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Doctor:
    """Runs the checks of one device; ``roles`` maps role → credential (empty: the URL's user)."""

    broker: BrokerConfig
    device_id: str
    roles: dict[str, Credential]
    timeout_s: float = 5.0
    expect_version: str | None = None

    def __post_init__(self) -> None:
        self.topics = Topics(self.device_id)
        self.nonce = f"{time.time_ns():x}"
        self.findings: list[Finding] = []
        self.sessions: dict[str, Session] = {}
        self.answered_at = datetime.now(UTC)

    def user(self, role: str) -> str:
        cred = self.roles.get(role)
        if cred is not None:
            return cred.username
        return self.broker.credentials[0] or "anonymous"

    def examine(self) -> list[Finding]:
        try:
            if self._reachable() and self._tls() and self._logins():
                status = self._status()
                self._answer(status)
                if self.roles:
                    self._access(status)
        finally:
            for session in self.sessions.values():
                session.close()
        return self.findings

    def _add(self, finding: Finding) -> bool:
        self.findings.append(finding)
        return finding.ok is not False

    def _reachable(self) -> bool:
        host, port = self.broker.host, self.broker.port
        start = time.perf_counter()
        try:
            with socket.create_connection((host, port), timeout=self.timeout_s):
                pass
        except OSError as exc:
            fixes = {
                socket.gaierror: f"check the host name in --broker, or use the broker's IP address ({host} unknown)",
                ConnectionRefusedError: "start Mosquitto on the broker host (sudo systemctl start mosquitto) "
                f"and check the port ({port}) in --broker and in its listener line",
            }
            fix = next(
                (text for kind, text in fixes.items() if isinstance(exc, kind)),
                "check the network path and firewall between this computer and the broker",
            )
            return self._add(Finding("reachable", False, f"{host}:{port}: {describe_connect_failure(exc)}", fix))
        took = (time.perf_counter() - start) * 1000
        return self._add(Finding("reachable", True, f"{host}:{port} accepted a connection in {took:.0f} ms"))

    def _tls(self) -> bool:
        if not self.broker.tls:
            return self._add(self._plain_finding())
        context = ssl.create_default_context(cafile=str(self.broker.ca_file) if self.broker.ca_file else None)
        if self.broker.cert_file:
            context.load_cert_chain(str(self.broker.cert_file), str(self.broker.key_file or self.broker.cert_file))
        try:
            address = (self.broker.host, self.broker.port)
            with (
                socket.create_connection(address, timeout=self.timeout_s) as raw,
                context.wrap_socket(raw, server_hostname=self.broker.host) as tls,
            ):
                cert = tls.getpeercert()
                version = tls.version()
        except (OSError, ssl.SSLError) as exc:
            fix = (
                "pass the ward's CA: --ca-file ca.crt (from advisor broker-profile)"
                if self.broker.ca_file is None
                else "connect by a name in the broker's certificate, or regenerate it with --host NAME"
                if "mismatch" in str(exc)
                else "use the CA that signed this broker's certificate (the profile's ca.crt)"
            )
            cause = describe_connect_failure(exc)
            return self._add(Finding("TLS", False, cause, None if "--ca-file" in cause else fix))
        finding = certificate_finding(cert or {}, self.broker.host, datetime.now(UTC))
        return self._add(replace(finding, detail=f"{version}, {finding.detail}"))

    def _plain_finding(self) -> Finding:
        """An mqtt:// URL: TLS not used, or a TLS port spoken to in plain text (the broker just hangs up)."""
        host, port = self.broker.host, self.broker.port
        if speaks_tls(host, port, self.timeout_s):
            return Finding(
                "TLS",
                False,
                f"this port speaks TLS: use mqtts://{host}:{port} with --ca-file",
                f"advisor doctor --broker mqtts://{host}:{port} --ca-file ca.crt (the CA from advisor broker-profile)",
            )
        return Finding("TLS", None, "not used (mqtt://): anyone on the network can read and send events")

    def _logins(self) -> bool:
        wanted = {
            "sensor": () if self.roles else (self.topics.status, self.topics.errors),  # the URL's user does all
            "monitor": (self.topics.status, self.topics.errors),
            "flasher": (self.topics.model_ack, self.topics.status),
            "device": (),
        }
        roles = list(self.roles) if self.roles else ["sensor"]
        accepted, refused = [], []
        for role in sorted(roles, key=list(wanted).index):
            cred = self.roles.get(role)
            session = Session(cred.login(self.broker) if cred else self.broker, role, wanted[role])
            problem = session.logged_in(self.timeout_s)
            if problem is None:
                self.sessions[role] = session
                accepted.append(self.user(role))
            else:
                session.close()
                refused.append(f"{self.user(role)}: {problem}")
        if refused:
            return self._add(
                Finding(
                    "credentials",
                    False,
                    "; ".join(refused) + (f" (accepted: {', '.join(accepted)})" if accepted else ""),
                    "use the user and password from credentials.txt; to reset one on the broker host: "
                    "sudo mosquitto_passwd /etc/mosquitto/advisor/passwd USER, then restart Mosquitto",
                )
            ) or bool(accepted)
        return self._add(Finding("credentials", True, f"accepted: {', '.join(accepted)}"))

    def _status(self) -> DeviceStatus | None:
        reader = next(
            ((role, self.sessions[role]) for role in ("monitor", "flasher", "sensor") if role in self.sessions), None
        )
        if reader is None or self.topics.status not in reader[1].topics:
            self._add(Finding("status", None, "no monitor or flasher login to read the status with"))
            return None
        role, session = reader
        session.wait(lambda: bool(session.received(self.topics.status)), min(self.timeout_s, 3.0))
        status = None
        for payload, _ in session.received(self.topics.status)[-1:]:
            try:
                status = DeviceStatus.from_json(payload)
            except SchemaError:
                self._add(Finding("status", False, f"the status message is not readable: {payload[:80]!r}"))
                return None
        self._add(status_finding(status, self.topics.status, self.user(role), self.expect_version))
        return status

    def _answer(self, status: DeviceStatus | None) -> None:
        sender = self.sessions.get("sensor")
        reader = self.sessions.get("monitor") or (sender if not self.roles else None)
        if sender is None or reader is None:
            self._add(Finding("answer", None, "needs a sensor login to send and a monitor login to read"))
            return
        probe_id = f"doctor-{self.nonce}"
        sent = datetime.now(UTC)
        puback = sender.publish(self.topics.events, probe_event(self.nonce), self.timeout_s)
        if puback == NOT_AUTHORIZED:
            self._add(
                Finding(
                    "answer",
                    False,
                    f"{self.user('sensor')} may not write {self.topics.events}",
                    "the broker's ACL must give the sensor 'topic write' on its device's events "
                    "(regenerate it with advisor broker-profile)",
                )
            )
            return

        def refusal() -> ErrorMessage | None:
            for payload, at in reader.received(self.topics.errors):
                try:
                    message = ErrorMessage.from_json(payload)
                except SchemaError:
                    continue
                if message.event_id == probe_id:
                    self.answered_at = at
                    return message
            return None

        if not reader.wait(lambda: refusal() is not None, self.timeout_s):
            online = status is not None and status.state == "online"
            self._add(
                Finding(
                    "answer",
                    False,
                    f"no answer to a probe event in {self.timeout_s:g} s"
                    + (
                        f" although the device is online: it may not read its events, or {self.user('monitor')} "
                        "may not read its errors"
                        if online
                        else ": the device is not online"
                    ),
                    "see the status line; check the device's log (journalctl -u advisor) and the broker's ACL",
                )
            )
            return
        answer = refusal()
        assert answer is not None
        took = (self.answered_at - sent).total_seconds() * 1000
        self._add(
            Finding(
                "answer",
                True,
                f"a probe event went in as {self.user('sensor')} and the device's refusal came back in {took:.0f} ms "
                f"(nothing stored)",
            )
        )
        if answer.at is None:
            self._add(Finding("clock", None, "this device's software does not report its clock (update it)"))
            return
        device_at = datetime.fromisoformat(answer.at)
        self._add(clock_finding(device_at, sent, self.answered_at, status.clock if status else None))

    def _access(self, status: DeviceStatus | None) -> None:
        """Each role does its job and no more; the probes are refused by the device anyway."""
        if self.broker.protocol != "5":
            self._add(Finding("access", None, "needs MQTT 5: under 3.1.1 the broker drops a refused publish silently"))
            return
        for role in ("sensor", "monitor", "flasher"):
            session = self.sessions.get(role)
            if session is not None:
                self._add(getattr(self, f"_access_{role}")(session, status))

    def _too_open(self, role: str, what: str) -> Finding:
        return Finding(
            f"access {role}",
            False,
            f"{self.user(role)} {what}: the ACL is too open",
            "regenerate the profile (advisor broker-profile) or fix the lines under "
            f"'user {self.user(role)}' in the acl file",
        )

    def _access_sensor(self, session: Session, status: DeviceStatus | None) -> Finding:
        end = TransferEnd(f"doctor-{self.nonce}").to_json()
        if session.publish(self.topics.model, end, self.timeout_s) != NOT_AUTHORIZED:
            return self._too_open("sensor", f"may write {self.topics.model} (flash bundles)")
        if status is not None:
            session.client.subscribe(self.topics.status, 1)
            if session.wait(lambda: bool(session.received(self.topics.status)), 1.5):
                return self._too_open("sensor", f"may read {self.topics.status}")
        return Finding("access sensor", True, f"{self.user('sensor')} writes events only (flashing refused)")

    def _access_monitor(self, session: Session, status: DeviceStatus | None) -> Finding:
        if session.publish(self.topics.events, probe_event(f"{self.nonce}-m"), self.timeout_s) != NOT_AUTHORIZED:
            return self._too_open("monitor", f"may write {self.topics.events}")
        reads = "reads status and errors" if status is not None else "reads errors"
        return Finding("access monitor", True, f"{self.user('monitor')} {reads}, writes nothing (an event refused)")

    def _access_flasher(self, session: Session, status: DeviceStatus | None) -> Finding:
        transfer = f"doctor-{self.nonce}-f"
        if session.publish(self.topics.model, TransferEnd(transfer).to_json(), self.timeout_s) == NOT_AUTHORIZED:
            return Finding(
                "access flasher",
                False,
                f"{self.user('flasher')} may not write {self.topics.model}",
                "the ACL must give the flasher 'topic write' on the device's model topic (advisor broker-profile)",
            )

        if status is None or status.state != "online":
            return Finding(
                "access flasher",
                True,
                f"{self.user('flasher')} may write transfers (the device's answer not checked: it is not online)",
            )

        def acked() -> bool:
            for payload, _ in session.received(self.topics.model_ack):
                try:
                    if ModelAck.from_json(payload).transfer == transfer:
                        return True
                except SchemaError:
                    continue
            return False

        if not session.wait(acked, self.timeout_s):
            return Finding(
                "access flasher",
                False,
                f"the device did not answer {self.user('flasher')}'s transfer probe on {self.topics.model_ack}",
                "the device must read 'model' and write 'model/ack', the flasher read 'model/ack' (acl file)",
            )
        if session.publish(self.topics.events, probe_event(f"{self.nonce}-f"), self.timeout_s) != NOT_AUTHORIZED:
            return self._too_open("flasher", f"may write {self.topics.events}")
        return Finding("access flasher", True, f"{self.user('flasher')} sends transfers and the device answers them")


def as_json(findings: list[Finding]) -> str:
    return json.dumps({"ok": all(f.ok is not False for f in findings), "checks": [asdict(f) for f in findings]})
