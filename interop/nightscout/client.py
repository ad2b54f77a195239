"""Reading a Nightscout site's API v1 (``entries.json``, ``treatments.json``), page by page.

Authentication is the site's API secret (sent as its SHA-1 in the ``api-secret`` header, as
Nightscout expects) or an access token (``token`` query parameter). Nightscout answers newest
first and at most ``count`` items, so a pull walks back from now to the cursor in pages.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

PAGE = 1000
MAX_PAGES = 500  # 500,000 items: more than a year of 5-minute readings


class NightscoutError(Exception):
    """The site could not be read; the message says why and what to check."""


class NightscoutClient:
    """One Nightscout site (``url``: its base address, e.g. https://me.example.org)."""

    def __init__(self, url: str, api_secret: str | None = None, token: str | None = None, timeout_s: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise NightscoutError(f"{url!r} is not an http(s):// address of a Nightscout site")
        self.base = url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if api_secret:
            self.headers["api-secret"] = hashlib.sha1(api_secret.encode()).hexdigest()
        self.token = token
        self.timeout_s = timeout_s

    def _get(self, path: str, query: dict[str, str]) -> list[dict]:
        if self.token:
            query = {**query, "token": self.token}
        url = f"{self.base}{path}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise NightscoutError(
                    f"{self.base} refused the request ({exc.code}): check --api-secret or --token"
                ) from None
            raise NightscoutError(f"{self.base}{path} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NightscoutError(f"cannot reach {self.base}: {reason}") from None
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            raise NightscoutError(f"{self.base}{path} did not answer JSON: is it a Nightscout site?") from None
        if not isinstance(data, list):
            raise NightscoutError(f"{self.base}{path} answered {type(data).__name__}, not a list")
        return data

    def _walk(self, path: str, field: str, after: str) -> list[dict]:
        """Every item whose ``field`` is after ``after``, oldest first, paging back from now.

        Each next page asks for items at or before the oldest of the last one, so items sharing
        the boundary time are read twice and kept once (by ``_id``), never skipped.
        """
        found: dict[str, dict] = {}
        upper: str | None = None
        for _ in range(MAX_PAGES):
            query = {f"find[{field}][$gt]": after, "count": str(PAGE)}
            if upper is not None:
                query[f"find[{field}][$lte]"] = upper
            page = self._get(path, query)
            for item in page:
                key = item.get("_id") if isinstance(item, dict) else None
                found[str(key) if key is not None else f"#{len(found)}"] = item
            if len(page) < PAGE:
                return sorted(found.values(), key=lambda item: _order(item, field))
            bound = str(min(_order(item, field) for item in page))
            if bound == upper:
                raise NightscoutError(f"more than {PAGE} items share one {field}: cannot page past them")
            upper = bound
        raise NightscoutError(f"more than {MAX_PAGES * PAGE} items: pull a shorter span with --since")

    def entries(self, after: datetime) -> list[dict]:
        """Glucose entries (sgv, mbg and others) after ``after``, oldest first."""
        return self._walk("/api/v1/entries.json", "date", str(_ms(after)))

    def treatments(self, after: datetime) -> list[dict]:
        """Treatments created after ``after``, oldest first."""
        return self._walk("/api/v1/treatments.json", "created_at", _iso(after))


def _order(item: object, field: str) -> int | str:
    """The paging key of an item: ``date`` in ms, or the ``created_at`` text (ISO sorts as text in UTC)."""
    value = item.get(field) if isinstance(item, dict) else None
    if field == "date":
        return int(value) if isinstance(value, int | float) else 0
    return str(value or "")


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def newest(items: list[dict], field: str, now: datetime) -> datetime | None:
    """The latest ``date`` (entries) or ``created_at`` (treatments) among ``items``, never after
    ``now`` (a phone with a wrong clock must not move the cursor past real readings)."""
    found = []
    for item in items:
        value = item.get(field) if isinstance(item, dict) else None
        if field == "date" and isinstance(value, int | float):
            try:
                found.append(datetime.fromtimestamp(value / 1000.0, UTC))
            except (ValueError, OverflowError, OSError):
                continue
        elif field == "created_at" and isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if parsed.tzinfo is not None:
                found.append(parsed)
    latest = max(found, default=None)
    return None if latest is None else min(latest, now)
