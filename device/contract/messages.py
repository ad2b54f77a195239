"""Every message the device exchanges, one typed schema each (docs/contract.md).

MQTT: events and visit histories in, suggestions, errors, status, risk and model
acknowledgements out, bundle transfers in. HTTP: what the bedside page reads and posts.
The device, the page server, the tools (replay, bench, flash, watcher) and the tests build
and read these payloads only through the classes here, so a field has one name everywhere.

Events are :class:`domain.events.Event` (shared with training) and visit histories
:class:`domain.validation.VisitHistory`; their untrusted-input decoders with plain
reasons live in :mod:`domain.validation`. :data:`MQTT_CONTRACT` and
:data:`HTTP_CONTRACT` list every topic and endpoint; a test checks the document against them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from device.contract import schema
from domain.dose_context import Due
from domain.events import Event
from domain.validation import DuplicateKey, VisitHistory, unique_keys

InsulinName = Literal["regular", "rapid", "long", "nph", "ultralente"]  # domain.events.Insulin's values

M = TypeVar("M", bound="Message")
SuggestionStatus = Literal["suggest", "withhold", "insufficient_data", "no_dose_due"]
Role = Literal["nurse", "patient", "viewer"]  # docs/contract.md, "Users and roles"
DeviceState = Literal["starting", "online", "offline"]
OverrideReason = Literal["patient_refused", "not_eating", "clinicians_order", "other"]
ResponseAction = Literal["given", "declined", "acknowledged"]


class Message:
    """JSON conversion shared by every schema (a mixin for frozen dataclasses)."""

    def to_payload(self) -> dict[str, Any]:
        """The JSON object of this message."""
        payload: dict[str, Any] = schema.dump(self)
        return payload

    def to_json(self) -> bytes:
        return json.dumps(self.to_payload()).encode()

    @classmethod
    def from_payload(cls: type[M], data: object) -> M:
        """Parse a decoded JSON object strictly; raises :class:`schema.SchemaError` naming the field."""
        return schema.load(cls, data)

    @classmethod
    def from_json(cls: type[M], raw: bytes | bytearray | str) -> M:
        try:
            data = json.loads(raw, object_pairs_hook=unique_keys)
        except DuplicateKey as exc:
            raise schema.SchemaError(f"the key '{exc.key}' appears twice; send each field once") from None
        except ValueError as exc:
            raise schema.SchemaError(f"not JSON: {exc}") from None
        return cls.from_payload(data)


# --------------------------------------------------------------------------- out: MQTT
@dataclass(frozen=True, slots=True)
class ModelInfo(Message):
    """Which dose bundle answered: name, version and manifest sha256 (all null without a model)."""

    name: str
    version: str | None
    sha256: str | None


@dataclass(frozen=True, slots=True)
class ShadowAnswer(Message):
    """A candidate bundle's answer to the same event as a live answer (topic ``shadow``): stored and
    published for ``advisor shadow report``, never shown, never acted on."""

    live_id: str
    patient: str
    event_id: str
    ts: str
    status: str
    units: float
    model_units: float | None
    rules: list[str]
    model: ModelInfo
    live_status: str
    live_units: float


@dataclass(frozen=True, slots=True)
class Retired(Message):
    """Why a suggestion may no longer be acted on: something that bears on it happened after it was made.

    ``event_id`` and ``kind`` name the event (a dose of any insulin, hypoglycaemia symptoms, a
    meal, exercise) recorded for the patient after the suggestion; ``at`` is that event's time;
    ``reason`` says it in one plain line for the page and the 409 answer.
    """

    suggestion_id: str
    event_id: str
    kind: str
    at: str
    reason: str


@dataclass(frozen=True, slots=True)
class Suggestion(Message):
    """The answer to a glucose reading, a request, a meal or hypoglycaemia symptoms (docs/contract.md, "Suggestion").

    ``replaces``: the live answer this one retired (an event that bears on it arrived), if any;
    ``insulin``: what the units are of; ``meal_first``: a pre-meal dose, to be given only once the
    meal is recorded (the meal's own answer replaces this one).
    """

    id: str
    patient: str
    event_id: str
    ts: str
    status: SuggestionStatus
    units: float
    model_units: float | None
    usual_units: float | None
    reasons: list[str]
    rules: list[str]
    glucose_mg_dl: float | None
    glucose_age_min: float | None
    iob_units: float
    model: ModelInfo
    due: Due | None = None
    recheck_at: str | None = None
    carbs_g: float | None = None
    next_check_at: str | None = None
    latency_ms: float | None = None
    replaces: Retired | None = None
    insulin: InsulinName = "regular"
    meal_first: bool = False

    @property
    def is_dose(self) -> bool:
        return self.status == "suggest"

    def with_latency(self, latency_ms: float) -> Suggestion:
        return replace(self, latency_ms=latency_ms)


@dataclass(frozen=True, slots=True)
class ErrorMessage(Message):
    """A rejected or failed input, or a warning about an accepted one, in one plain line.

    ``event_id`` when it could be read; ``level`` says whether the input was refused or
    accepted with a warning (for example a patient id that looks like a known one).
    """

    event_id: str | None
    reason: str
    level: Literal["refused", "warning"] = "refused"
    at: str | None = None  # the device's wall clock when sent (stamped by the communicator)


@dataclass(frozen=True, slots=True)
class Alert(Message):
    """Something a person must act on, announced once on the ``alerts`` topic (an overdue check)."""

    id: str
    patient: str
    kind: Literal["check_overdue"]
    due_at: str
    raised_at: str
    message: str
    suggestion_id: str | None = None


@dataclass(frozen=True, slots=True)
class RiskModelInfo(Message):
    """One companion model as the risk message and the page describe it."""

    version: str
    network: str | None
    runs: str
    demo_trained: bool
    label: str


@dataclass(frozen=True, slots=True)
class Contribution(Message):
    """How much one code of the history moved a companion model's probability (occlusion on the device)."""

    code: str
    change: float  # the probability with the code minus without it: positive raises the risk


@dataclass(frozen=True, slots=True)
class DriftStatus(Message):
    """The dose model's inputs on this device against its training reference (docs/deployment.md, "Drift")."""

    decisions: int
    patients: int
    window: int
    alert_psi: float
    watch: list[str]
    psi: dict[str, float] | None
    drifted: list[str]
    note: str
    min_patients: int = 1
    min_decisions: int = 1
    counts: dict[str, list[int]] = field(default_factory=dict)  # watched features' bins over the window
    expected: dict[str, list[float]] = field(default_factory=dict)  # their training shares


@dataclass(frozen=True, slots=True)
class WardOutcomes(Message):
    """The ward's last ``outcomes.days`` as the device saw them (docs/deployment.md, "Outcomes")."""

    since: str
    until: str
    readings: int
    below_70_share: float | None
    below_54_share: float | None
    suggested: int
    followed_share: float | None
    given_with_model: int
    given_minus_model_mean_units: float | None
    given_minus_model_mae_units: float | None
    alerts: list[str]


@dataclass(frozen=True, slots=True)
class Activity(Message):
    """What the device answered in the last ``window_s`` (a fleet view and a rollout read it)."""

    window_s: int
    answers: dict[str, int]  # by status
    lowered: int  # dose answers the supervisor set more than half a unit below the model's number
    errors: int  # inputs refused


@dataclass(frozen=True, slots=True)
class DeviceStatus(Message):
    """The retained ``status`` message: what runs, what is wrong, since when."""

    state: DeviceState
    device_id: str
    models: list[ModelInfo]
    risk_models: dict[str, RiskModelInfo]
    model_problem: str | None
    storage_problem: str | None
    held_in_memory: int
    notes: list[str]
    clock: Literal["wall", "event"]
    timezone: str
    started_at: str
    checks_overdue: list[str]
    clock_problem: str | None = field(default=None, kw_only=True)  # absent in a status from an older device
    drift: DriftStatus | None = field(default=None, kw_only=True)  # None: not measured (no reference, or off)
    outcomes: WardOutcomes | None = field(default=None, kw_only=True)  # None: not yet read from the store
    activity: Activity | None = field(default=None, kw_only=True)  # None in the last will
    ward: str | None = field(default=None, kw_only=True)
    published_at: str | None = field(
        default=None, kw_only=True
    )  # the device's wall clock (the will: when it connected)


@dataclass(frozen=True, slots=True)
class PageStatus(DeviceStatus):
    """``GET /api/status``: the device status plus the broker link and page state the page shows."""

    broker: str
    broker_connected: bool
    broker_problem: str | None
    actions_need_pin: bool

    @classmethod
    def of(
        cls,
        status: DeviceStatus,
        broker: str,
        broker_connected: bool,
        broker_problem: str | None,
        actions_need_pin: bool,
    ) -> PageStatus:
        """The page's status: ``status`` plus the broker link and page state."""
        fields = {f: getattr(status, f) for f in schema.field_names(DeviceStatus)}
        return cls(
            **fields,
            broker=broker,
            broker_connected=broker_connected,
            broker_problem=broker_problem,
            actions_need_pin=actions_need_pin,
        )


@dataclass(frozen=True, slots=True)
class Risk(Message):
    """Companion-model risk context for one patient; never changes the dose."""

    patient: str
    mortality_1y: float | None
    readmission_30d: float | None
    models: dict[str, RiskModelInfo]
    visits: int
    computed_at: str
    note: str
    contributions: dict[str, list[Contribution]] = field(default_factory=dict)  # by model, largest first


@dataclass(frozen=True, slots=True)
class ModelAck(Message):
    """The device's answer to a bundle transfer: installed (name, version) or refused (reason)."""

    transfer: str | None
    accepted: bool
    reason: str | None = None
    name: str | None = None
    version: str | None = None


# ---------------------------------------------------------------------------- in: OTA
@dataclass(frozen=True, slots=True)
class TransferBegin(Message):
    """Opens a bundle transfer: total size and sha256 of the archive, number of chunks."""

    transfer: str
    size: int
    sha256: str
    chunks: int
    type: Literal["begin"] = "begin"


@dataclass(frozen=True, slots=True)
class TransferChunk(Message):
    """One piece of the archive, base64, with its own sha256."""

    transfer: str
    index: int
    sha256: str
    data: str
    type: Literal["chunk"] = "chunk"


@dataclass(frozen=True, slots=True)
class TransferEnd(Message):
    """Closes a transfer: the device reassembles, checks and installs (or refuses)."""

    transfer: str
    type: Literal["end"] = "end"


TRANSFER_TYPES: dict[str, type[TransferBegin] | type[TransferChunk] | type[TransferEnd]] = {
    "begin": TransferBegin,
    "chunk": TransferChunk,
    "end": TransferEnd,
}


# ------------------------------------------------------------------------------- HTTP
@dataclass(frozen=True, slots=True)
class PlanStep(Message):
    """One change of a patient's dosing plan: when, which part, from and to (U), and why."""

    at: str
    part: str
    before: float
    after: float
    why: str


@dataclass(frozen=True, slots=True)
class PlanSummary(Message):
    """A patient's dosing plan in one line, their eating state, and its latest changes (newest first)."""

    line: str
    basal_units: float
    meal_units: list[float]
    nutrition: str | None
    changes: list[PlanStep]


@dataclass(frozen=True, slots=True)
class GlucoseNow(Message):
    """The patient's latest reading and its age at the device's now."""

    mg_dl: float
    ts: str
    age_min: float


@dataclass(frozen=True, slots=True)
class GlucosePoint(Message):
    ts: str
    mg_dl: float


@dataclass(frozen=True, slots=True)
class DosePoint(Message):
    ts: str
    insulin: str
    units: float


@dataclass(frozen=True, slots=True)
class Series(Message):
    """The last 24 hours for the page's chart."""

    glucose: list[GlucosePoint]
    doses: list[DosePoint]


@dataclass(frozen=True, slots=True)
class Response(Message):
    """What a person did with a suggestion (at most one each): gave a dose, declined, acknowledged."""

    action: ResponseAction
    at: str
    user: str
    role: str
    units: float | None = None
    reason: OverrideReason | None = None
    note: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class DoseLine(Message):
    """One answer that carried a dose, and what was done with it."""

    at: str
    glucose_mg_dl: float | None
    suggested_units: float
    response: ResponseAction | None
    given_units: float | None
    user: str | None
    reason: OverrideReason | None
    note: str | None
    replaced: str | None = None  # why it was replaced before anyone acted on it (not "not answered")


@dataclass(frozen=True, slots=True)
class LowLine(Message):
    """A reading under the low threshold and how it was treated."""

    at: str
    mg_dl: float
    carbs_g: float | None
    acknowledged_by: str | None
    recheck_at: str | None
    next_reading_mg_dl: float | None
    next_reading_at: str | None


@dataclass(frozen=True, slots=True)
class Adherence(Message):
    """How the day's suggested doses were followed."""

    suggested: int
    followed: int
    given_different: int
    declined: int
    unanswered: int
    followed_share: float | None
    reasons: dict[str, int]
    replaced: int = 0


@dataclass(frozen=True, slots=True)
class WardAdherence(Message):
    """``GET /api/adherence?date=``: how the day's suggested doses were followed, by patient and in all."""

    date: str
    timezone: str
    total: Adherence
    patients: dict[str, Adherence]


@dataclass(frozen=True, slots=True)
class DaySummary(Message):
    """``GET /api/patients/<id>/summary?date=``: one patient's day for the clinician (also as PDF)."""

    patient: str
    date: str
    timezone: str
    readings: int
    mean_mg_dl: float | None
    in_range_share: float | None
    lows: list[LowLine]
    doses: list[DoseLine]
    other_doses: list[DosePoint]
    adherence: Adherence
    rules: dict[str, int]
    answers: dict[str, int]
    rule_words: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PatientView(Message):
    """``GET /api/patients/<id>``: what the page shows for one patient.

    ``actionable``: the suggestion may still be acted on (current, not expired, not answered, the
    device linked to its broker); otherwise ``not_actionable`` says why in one line. ``risk`` is
    present only for a signed-in nurse; ``plan`` when the patient has a dosing plan.
    """

    patient: str
    now: str
    glucose: GlucoseNow | None
    usual_units: float | None
    suggestion: Suggestion | None
    series: Series
    risk: Risk | None = None
    notices: list[str] = field(default_factory=list)
    response: Response | None = None
    retired: Retired | None = None
    actionable: bool = False
    not_actionable: str | None = None
    expires_at: str | None = None
    next_check_at: str | None = None
    check_overdue: bool = False
    pen_step_units: float = 0.5
    max_single_units: float = 20.0
    plan: PlanSummary | None = None


@dataclass(frozen=True, slots=True)
class PatientRow(Message):
    """One patient at a glance: last glucose and its age, the answer, a dose pending, the next check, lows."""

    patient: str
    glucose_mg_dl: float | None
    glucose_age_min: float | None
    status: SuggestionStatus | None
    units: float | None
    dose_pending: bool
    response: ResponseAction | None
    next_check_at: str | None
    check_overdue: bool
    lows_24h: int
    retired: bool = False
    live: bool = False


@dataclass(frozen=True, slots=True)
class PatientList(Message):
    """``GET /api/patients[?offset=&limit=&starting=]``: one page of known patients, in id order, at a glance."""

    patients: list[str]
    total: int
    rows: list[PatientRow] = field(default_factory=list)
    now: str | None = None


@dataclass(frozen=True, slots=True)
class Health(Message):
    """``GET /health``: whether the device can answer now (HTTP 200) or not (503), and why not."""

    healthy: bool
    state: DeviceState
    device_id: str
    problems: list[str]


@dataclass(frozen=True, slots=True)
class PageSession(Message):
    """``GET /api/session``: the token the page sends with every action (``X-Advisor-Session``)."""

    token: str


@dataclass(frozen=True, slots=True)
class ConfirmDose(Message):
    """``POST /api/patients/<id>/confirm``: this dose was given for this suggestion.

    Units that differ from the suggestion need a ``reason`` (``other`` also a ``note``). A
    ``meal_first`` suggestion needs ``eating``: true (the person asked; the meal is recorded with the dose).
    """

    suggestion_id: str
    units: float
    reason: OverrideReason | None = None
    note: str | None = None
    eating: bool | None = None


@dataclass(frozen=True, slots=True)
class Decline(Message):
    """``POST /api/patients/<id>/decline``: the suggested dose was not given, and why."""

    suggestion_id: str
    reason: OverrideReason
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SignIn(Message):
    """``POST /api/sign-in``: a user's name and PIN (or badge number)."""

    user: str
    pin: str


@dataclass(frozen=True, slots=True)
class SignedIn(Message):
    """Who this page session acts as; ``user`` null when nobody is signed in."""

    user: str | None
    role: Role | None
    users_configured: bool
    idle_lock_s: int


@dataclass(frozen=True, slots=True)
class Acknowledge(Message):
    """``POST /api/patients/<id>/acknowledge``: a withhold or insufficient-data answer was seen."""

    suggestion_id: str


@dataclass(frozen=True, slots=True)
class ActionDone(Message):
    """The answer to a page action, sent once the device has stored it; ``event``: the event an entry or a
    confirmation recorded; ``warnings``: what a person should check about it (a second dose close by)."""

    ok: bool
    event: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ApiError(Message):
    """Any refused HTTP request, in one plain line."""

    error: str


@dataclass(frozen=True, slots=True)
class StreamNudge(Message):
    """One server-sent event on ``/api/stream``: this patient (or ``""``: the device) changed."""

    patient: str


# --------------------------------------------------------------------------- contract
@dataclass(frozen=True, slots=True)
class TopicContract:
    """One MQTT topic under ``advisor/<device_id>/``: who publishes, what, how."""

    leaf: str
    direction: Literal["to device", "from device"]
    schema: type
    qos: int
    retained: bool
    note: str = ""
    expires: bool = False  # MQTT 5 message expiry: the device's suggestion_expiry_s


@dataclass(frozen=True, slots=True)
class EndpointContract:
    """One HTTP route of the bedside page server."""

    method: Literal["GET", "POST"]
    path: str
    request: type | None
    response: type | None
    note: str = ""


MQTT_CONTRACT: tuple[TopicContract, ...] = (
    TopicContract("events", "to device", Event, 1, False, "glucose, insulin, meal, … and request events"),
    TopicContract("patients", "to device", VisitHistory, 1, False, "a visit history for the companion models"),
    TopicContract("model", "to device", TransferBegin, 1, False, "bundle transfer: begin, chunk…, end"),
    TopicContract(
        "suggestions", "from device", Suggestion, 1, False, "MQTT 5 message expiry = suggestion_expiry_s", expires=True
    ),
    TopicContract("errors", "from device", ErrorMessage, 1, False),
    TopicContract("alerts", "from device", Alert, 1, False, "an overdue glucose check, once per answer"),
    TopicContract("status", "from device", DeviceStatus, 1, True, "also the last will (state offline)"),
    TopicContract("risk", "from device", Risk, 1, False),
    TopicContract(
        "shadow", "from device", ShadowAnswer, 1, False, "a candidate bundle's answer; never shown or acted on"
    ),
    TopicContract("model/ack", "from device", ModelAck, 1, False),
)

CONTRACT_BY_SCHEMA: dict[type, TopicContract] = {c.schema: c for c in MQTT_CONTRACT}

HTTP_CONTRACT: tuple[EndpointContract, ...] = (
    EndpointContract("GET", "/", None, None, "the bedside page (HTML)"),
    EndpointContract("GET", "/favicon.svg", None, None, "the page's icon (also at `/favicon.ico`)"),
    EndpointContract("GET", "/api/status", None, PageStatus),
    EndpointContract("GET", "/api/session", None, PageSession, "a token for this page's actions"),
    EndpointContract("GET", "/api/patients", None, PatientList, "?offset=&limit=&starting="),
    EndpointContract("GET", "/api/patients/<id>", None, PatientView),
    EndpointContract("GET", "/api/stream", None, StreamNudge, "server-sent events"),
    EndpointContract("GET", "/api/patients/<id>/summary", None, DaySummary, "?date=YYYY-MM-DD (ward time; today)"),
    EndpointContract("GET", "/api/patients/<id>/summary.pdf", None, None, "the same day as a PDF"),
    EndpointContract("GET", "/api/adherence", None, WardAdherence, "?date=YYYY-MM-DD (ward time; today)"),
    EndpointContract("GET", "/api/me", None, SignedIn, "who this page session acts as"),
    EndpointContract("POST", "/api/sign-in", SignIn, SignedIn, "a user's own PIN; locks after 5 wrong tries"),
    EndpointContract("POST", "/api/sign-out", None, SignedIn),
    EndpointContract("POST", "/api/events", Event, ActionDone, "an entry at the bedside, published as an event"),
    EndpointContract("POST", "/api/patients/<id>/confirm", ConfirmDose, ActionDone, "once per suggestion"),
    EndpointContract("POST", "/api/patients/<id>/decline", Decline, ActionDone, "once per suggestion"),
    EndpointContract("POST", "/api/patients/<id>/acknowledge", Acknowledge, ActionDone, "once per suggestion"),
    EndpointContract(
        "POST", "/api/risk", VisitHistory, Risk, "a nurse; answered as on the `risk` topic, published there too"
    ),
    EndpointContract("GET", "/health", None, Health, "200 while the device can answer, else 503 with the problems"),
    EndpointContract("GET", "/metrics", None, None, "Prometheus text format 0.0.4 (docs/deployment.md)"),
)

ALL_SCHEMAS: tuple[type, ...] = (
    Event,
    VisitHistory,
    ModelInfo,
    ShadowAnswer,
    Retired,
    Suggestion,
    ErrorMessage,
    RiskModelInfo,
    Contribution,
    DriftStatus,
    WardOutcomes,
    Activity,
    DeviceStatus,
    PageStatus,
    Risk,
    ModelAck,
    TransferBegin,
    TransferChunk,
    TransferEnd,
    PlanStep,
    PlanSummary,
    GlucoseNow,
    GlucosePoint,
    DosePoint,
    Series,
    PatientView,
    PatientList,
    PageSession,
    Health,
    ConfirmDose,
    Decline,
    SignIn,
    SignedIn,
    Response,
    PatientRow,
    Alert,
    DaySummary,
    WardAdherence,
    DoseLine,
    LowLine,
    Adherence,
    Acknowledge,
    ActionDone,
    ApiError,
    StreamNudge,
)
