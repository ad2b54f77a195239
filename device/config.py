"""The device configuration: typed, validated, unknown keys rejected, every default here.

A config file (TOML, or JSON by extension) and the command-line options describe the same
:class:`DeviceConfig`; options override the file. Example::

    device_id = "bed7"
    state_dir = "/var/lib/advisor"
    clock = "wall"
    trust = ["/etc/advisor/release.pub"]

    [broker]
    url = "mqtts://broker.ward.local:8883"
    username = "bed7"
    password = "…"

    [http]
    host = "127.0.0.1"
    port = 8080

    [safety.default]
    max_single_units = 12

    [safety.patients."p-21"]
    max_above_usual_units = 2

    [checks]                       # glucose checks: before meals and at bedtime (ward time)
    times = ["07:30", "11:30", "17:30", "22:00"]
    basal_time = "22:00"           # the device answers the long-acting dose then (device/rules/basal_time.py)

    [checks.patients."p-21"]
    times = ["07:00", "12:00", "18:00", "21:30", "03:00"]
    basal_time = "08:00"
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from device.contract import schema
from device.contract.topics import DEVICE_ID, check_device_id
from device.rules.check_schedule import (
    DEFAULT_CHECK_TIMES,
    DEFAULT_COUNTS_WITHIN_MIN,
    CheckSchedule,
    ScheduleError,
    parse_times,
)
from device.rules.safety import ProfileError, SafetyProfile
from domain.events import PatientProfile
from domain.validation import ValidationError, profile_from_mapping

Clock = Literal["wall", "event"]
CLOCKS: tuple[Clock, ...] = ("wall", "event")
PROTOCOLS = ("5", "3.1.1")
DEFAULT_STATE_DIR = Path.home() / ".local" / "state" / "insulin-advisor"
ENV_USERNAME = "ADVISOR_MQTT_USERNAME"
ENV_PASSWORD = "ADVISOR_MQTT_PASSWORD"
ENV_PAGE_TOKEN = "ADVISOR_PAGE_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MIN_PAGE_TOKEN_CHARS = 6


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to reach the MQTT broker. The password never appears in ``repr``."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol: str = "5"
    keepalive_s: int = 5  # a link that stops answering is noticed within two of these (the page then refuses)
    session_expiry_s: int = 7 * 24 * 3600
    ca_file: Path | None = None  # the CA that signed the broker's certificate (default: the system's CAs)
    cert_file: Path | None = None  # a client certificate, when the broker asks for one
    key_file: Path | None = None  # its private key
    reconnect_max_s: int = 30
    receive_maximum: int = 20  # MQTT 5: unacknowledged events the broker may push at once

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts"):
            shown = self.url if "@" not in self.url else self.url.rsplit("@", 1)[1]  # never echo a password
            raise ConfigError(f"broker.url must look like mqtt://host:1883 or mqtts://host:8883, got {shown[:80]!r}")
        if not parts.hostname:
            raise ConfigError("broker.url has no host")
        try:
            _ = parts.port  # urlsplit checks the port only when asked
        except ValueError:
            raise ConfigError("broker.url has an invalid port") from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError("broker.url must be scheme://[user:password@]host[:port] with nothing after")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"broker.protocol must be one of {', '.join(PROTOCOLS)}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("broker.cert_file and broker.key_file go together: give both or neither")
        if not 5 <= self.keepalive_s <= 3600:
            raise ConfigError("broker.keepalive_s must be between 5 and 3600")
        if not 0 <= self.session_expiry_s <= 2**32 - 1:
            raise ConfigError("broker.session_expiry_s is out of range")
        if not 1 <= self.reconnect_max_s <= 600:
            raise ConfigError("broker.reconnect_max_s must be between 1 and 600")
        if not 1 <= self.receive_maximum <= 65535:
            raise ConfigError("broker.receive_maximum must be between 1 and 65535")

    def __repr__(self) -> str:
        return (
            f"BrokerConfig(url={self.display_url!r}, protocol={self.protocol!r}, "
            f"credentials={'set' if any(self.credentials) else 'none'})"
        )

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def credentials(self) -> tuple[str | None, str | None]:
        """User and password: URL first, then the explicit fields, then the environment."""
        parts = urlsplit(self.url)
        user = unquote(parts.username) if parts.username else self.username
        password = unquote(parts.password) if parts.password else self.password
        return user or os.environ.get(ENV_USERNAME), password or os.environ.get(ENV_PASSWORD)

    @property
    def display_url(self) -> str:
        """The URL without credentials, safe to log and show."""
        return f"{urlsplit(self.url).scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class HttpConfig:
    """The bedside page's listening address (localhost unless deliberately exposed).

    A page reachable from the network records doses only with the per-device ``token`` (a PIN
    or passphrase of at least 6 characters; from the config or ``ADVISOR_PAGE_TOKEN``). It is
    never shown in ``repr`` or logs.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()  # host names the page answers to besides IP addresses and localhost
    idle_lock_s: int = 300  # a signed-in user's page locks after this long unused

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("http.host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError("http.port must be between 0 and 65535 (0 picks a free port)")
        if not 30 <= self.idle_lock_s <= 3600:
            raise ConfigError("http.idle_lock_s must be between 30 and 3600 seconds")
        token = self.action_token
        if token is not None and len(token) < MIN_PAGE_TOKEN_CHARS:
            raise ConfigError(f"http.token must be at least {MIN_PAGE_TOKEN_CHARS} characters")
        if self.exposed and token is None:
            raise ConfigError(
                f"the bedside page on {self.host} is reachable from the network: set http.token "
                f"(or {ENV_PAGE_TOKEN}) so that only staff can record doses"
            )

    @property
    def exposed(self) -> bool:
        """Whether other machines can reach the page."""
        return self.host not in LOOPBACK_HOSTS

    @property
    def action_token(self) -> str | None:
        """The token page actions need: the configured one, else the environment's, else none."""
        return self.token or os.environ.get(ENV_PAGE_TOKEN) or None

    @classmethod
    def parse(cls, value: str, token: str | None = None) -> HttpConfig:
        """``HOST:PORT`` as given on the command line (the token comes from the config or environment)."""
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--http must be HOST:PORT, got {value!r}")
        return cls(host=host.strip("[]") or "127.0.0.1", port=int(port), token=token)


@dataclass(frozen=True)
class SafetyConfig:
    """The default safety profile and per-patient overrides (merged onto the default)."""

    default: SafetyProfile = field(default_factory=SafetyProfile)
    patients: dict[str, SafetyProfile] = field(default_factory=dict)

    def for_patient(self, patient: str) -> SafetyProfile:
        return self.patients.get(patient, self.default)


def _safety(data: object, where: str) -> SafetyConfig:
    """The ``[safety]`` section: a default profile and per-patient overrides merged onto it."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of settings")
    unknown = sorted(set(data) - {"default", "patients"})
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(f'{where}.{k}' for k in unknown)}")
    default_raw, patients_raw = data.get("default", {}), data.get("patients", {})
    if (
        not isinstance(default_raw, dict)
        or not isinstance(patients_raw, dict)
        or not all(isinstance(v, dict) for v in patients_raw.values())
    ):
        raise ConfigError(f"{where}.default and {where}.patients.<id> must be tables of settings")
    try:
        default = SafetyProfile.from_dict(default_raw)
        patients = {
            str(pid): SafetyProfile.from_dict({**default.to_dict(), **values}) for pid, values in patients_raw.items()
        }
    except (ProfileError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return SafetyConfig(default=default, patients=patients)


def _profiles(data: object, where: str) -> dict[str, PatientProfile]:
    """The ``[profiles."<id>"]`` tables: a patient's weight and the rest of a ``profile`` event, so the
    device has a dosing plan for them before any profile event arrives (an event outranks it)."""
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f'{where}."<patient>" must be tables of profile settings (weight_kg, …)')
    profiles = {}
    for pid, values in data.items():
        try:
            profiles[str(pid)] = profile_from_mapping(values)
        except ValidationError as exc:
            raise ConfigError(f"{where}.{pid}: {exc.reason}") from None
    return profiles


@dataclass(frozen=True)
class ChecksConfig:
    """The ward's glucose-check schedule and per-patient schedules (device/rules/check_schedule.py)."""

    default: CheckSchedule = field(default_factory=CheckSchedule)
    patients: dict[str, CheckSchedule] = field(default_factory=dict)

    def for_patient(self, patient: str) -> CheckSchedule:
        return self.patients.get(patient, self.default)


def _checks(data: object, where: str) -> ChecksConfig:
    """The ``[checks]`` section: ``times``, ``counts_within_min``, ``basal_time`` and
    ``patients.<id>.times`` / ``patients.<id>.basal_time``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table of settings")
    unknown = sorted(set(data) - {"times", "counts_within_min", "basal_time", "patients"})
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(f'{where}.{k}' for k in unknown)}")
    patients_raw = data.get("patients", {})
    if not isinstance(patients_raw, dict) or not all(
        isinstance(v, dict) and set(v) <= {"times", "basal_time"} for v in patients_raw.values()
    ):
        raise ConfigError(f"{where}.patients.<id> must be a table with 'times' and 'basal_time' only")
    within = data.get("counts_within_min", DEFAULT_COUNTS_WITHIN_MIN)
    if isinstance(within, bool) or not isinstance(within, int):
        raise ConfigError(f"{where}.counts_within_min must be an integer")

    def basal(values: dict, fallback: str | None, at: str) -> str | None:
        value = values.get("basal_time", fallback)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{at}.basal_time must be a time as HH:MM")
        return value

    try:
        ward_basal = basal(data, None, where)
        default = CheckSchedule(
            parse_times(data.get("times", DEFAULT_CHECK_TIMES), f"{where}.times"), within, ward_basal
        )
        patients = {
            str(pid): CheckSchedule(
                parse_times(v.get("times", default.times), f"{where}.patients.{pid}.times"),
                within,
                basal(v, ward_basal, f"{where}.patients.{pid}"),
            )
            for pid, v in patients_raw.items()
        }
    except ScheduleError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return ChecksConfig(default, patients)


DRIFT_WATCHED = ("glucose_last_mg_dl", "glucose_mean_24h")


@dataclass(frozen=True)
class DriftConfig:
    """Input drift against the dose bundle's training reference (docs/deployment.md, "Drift").

    PSI is reported for every feature; the alert is raised when a ``watch`` feature's PSI over the
    last ``window`` decisions of at least ``min_patients`` patients passes ``alert_psi``. The default
    watches the glucose levels: a ward's insulin regimens always differ from the training patients'
    (measured: PSI 0.3–1.4 on the dose features of 10 held-out AIM-94 patients with nothing shifted),
    its glucose should not; one patient's glucose alone does (16 of 31 AIM-94 patients, each alone,
    pass 0.5), so a device that sees fewer patients reports PSI and raises no alert.
    """

    enabled: bool = True
    window: int = 500  # the last decisions counted
    min_decisions: int = 100  # no PSI before this many
    alert_psi: float = 0.5
    watch: tuple[str, ...] = DRIFT_WATCHED
    min_patients: int = 5  # no alert on fewer patients: one patient's own glucose is no population

    def __post_init__(self) -> None:
        if not 50 <= self.window <= 100_000:
            raise ConfigError("drift.window must be between 50 and 100000 decisions")
        if not 10 <= self.min_decisions <= self.window:
            raise ConfigError("drift.min_decisions must be between 10 and drift.window")
        if not 0.01 <= self.alert_psi <= 10:
            raise ConfigError("drift.alert_psi must be between 0.01 and 10")
        if not 1 <= self.min_patients <= 10_000:
            raise ConfigError("drift.min_patients must be between 1 and 10000")


@dataclass(frozen=True)
class OutcomesConfig:
    """The ward's week in ``status`` (docs/deployment.md, "Outcomes"): alert lines for the share of
    readings below 70 and below 54 mg/dL (consensus targets: under 4 % and under 1 %)."""

    days: int = 7
    below_70_alert: float = 0.04
    below_54_alert: float = 0.01
    min_readings: int = 50  # no alert on fewer readings in the period

    def __post_init__(self) -> None:
        if not 1 <= self.days <= 90:
            raise ConfigError("outcomes.days must be between 1 and 90")
        if not 0 < self.below_54_alert <= self.below_70_alert < 1:
            raise ConfigError("outcomes: 0 < below_54_alert <= below_70_alert < 1")
        if not 1 <= self.min_readings <= 100_000:
            raise ConfigError("outcomes.min_readings must be between 1 and 100000")


@dataclass(frozen=True)
class DeviceConfig:
    """Everything ``advisor device run`` needs."""

    device_id: str = "bedside-1"
    ward: str | None = None  # the ward this device serves: advisor fleet --ward groups by it
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    state_dir: Path = DEFAULT_STATE_DIR
    bundle: Path | None = None
    shadow_bundle: Path | None = None  # a candidate answering beside the live bundle, never shown (shadow mode)
    trust: tuple[Path, ...] = ()
    risk_bundles: tuple[Path, ...] = ()  # companion bundles; the packaged ones fill any gap
    clock: Clock = "wall"
    allow_downgrade: bool = False
    suggestion_expiry_s: int = 900
    alert_check_s: float = 30.0  # how often the device looks for overdue glucose checks
    status_every_s: float = 60.0  # the retained status is published at least this often (the fleet's heartbeat)
    db_busy_timeout_s: float = 5.0  # how long a write waits for a locked database before holding in memory
    max_held_events: int = 1000  # events kept in memory while the database refuses writes; then backpressure
    max_patients_in_memory: int = 500  # patient histories kept in memory; others are rebuilt from SQLite on use
    timezone: str = "UTC"  # the ward's IANA time zone: time of day is read in it, whatever offset a sender uses
    earliest_event_date: str = "2000-01-01"  # with the wall clock, events dated before this are refused
    safety: SafetyConfig = field(default_factory=SafetyConfig, metadata={"load": _safety})
    checks: ChecksConfig = field(default_factory=ChecksConfig, metadata={"load": _checks})
    profiles: dict[str, PatientProfile] = field(default_factory=dict, metadata={"load": _profiles})
    drift: DriftConfig = field(default_factory=DriftConfig)
    outcomes: OutcomesConfig = field(default_factory=OutcomesConfig)

    def __post_init__(self) -> None:
        try:
            check_device_id(self.device_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.ward is not None and not (isinstance(self.ward, str) and DEVICE_ID.fullmatch(self.ward)):
            raise ConfigError(f"ward {self.ward!r} must be 1–64 letters, digits, '_' or '-'")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {', '.join(CLOCKS)}")
        if not 60 <= self.suggestion_expiry_s <= 3600:
            raise ConfigError("suggestion_expiry_s must be between 60 and 3600 seconds")
        if not 1 <= self.alert_check_s <= 600:
            raise ConfigError("alert_check_s must be between 1 and 600 seconds")
        if not 1 <= self.status_every_s <= 600:
            raise ConfigError("status_every_s must be between 1 and 600 seconds")
        if not 0.05 <= self.db_busy_timeout_s <= 60:
            raise ConfigError("db_busy_timeout_s must be between 0.05 and 60 seconds")
        if not 1 <= self.max_held_events <= 100_000:
            raise ConfigError("max_held_events must be between 1 and 100000")
        if not 1 <= self.max_patients_in_memory <= 100_000:
            raise ConfigError("max_patients_in_memory must be between 1 and 100000")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"timezone {self.timezone!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        try:
            date.fromisoformat(self.earliest_event_date)
        except ValueError:
            raise ConfigError("earliest_event_date must be a date like 2000-01-01") from None

    @property
    def zone(self) -> ZoneInfo:
        """The ward's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def earliest_event(self) -> datetime | None:
        """Events before this instant are refused (wall clock only: a log replay is history)."""
        if self.clock != "wall":
            return None
        return datetime.combine(date.fromisoformat(self.earliest_event_date), time.min, tzinfo=self.zone)

    @property
    def client_id(self) -> str:
        """Stable MQTT client id: the broker keeps this device's session under it."""
        return f"advisor-device-{self.device_id}"

    @classmethod
    def from_mapping(cls, data: object) -> DeviceConfig:
        """Build from a parsed config file; unknown keys and bad values raise :class:`ConfigError`."""
        return schema.load(cls, data, what="setting", error=ConfigError, root="the config")


def read_config_file(path: Path) -> dict:
    """Parse a TOML (or ``.json``) config file into a mapping."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(raw)
        return tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None


def load_config(path: Path | None, overrides: Mapping[str, object] | None = None) -> DeviceConfig:
    """The configuration from ``path`` (all defaults when ``None``) with ``overrides`` — settings by
    their dotted names (``broker.url``), as the command line gives them — put in before it is
    checked: one parser and one set of rules for the file and the command line."""
    data = read_config_file(path) if path else {}
    for key, value in (overrides or {}).items() if isinstance(data, dict) else ():
        table = data
        *parents, leaf = key.split(".")
        for depth, parent in enumerate(parents, start=1):
            table = table.setdefault(parent, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{'.'.join(parents[:depth])} must be a table of settings")
        table[leaf] = value
    return DeviceConfig.from_mapping(data)
