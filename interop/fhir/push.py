"""Sending a transaction Bundle to a FHIR server: ``POST <base>`` with a bearer token, retried.

Every entry is a ``PUT`` (at the resource's stable id, or conditional by identifier), so a
resend (after a lost answer, or a later export of the same record) updates the same resources
instead of adding copies. A server error (500, 502, 503, 504), a 429 or a broken connection is
tried again after 1, 2, 4 … seconds; a refusal (4xx) is not, and its ``OperationOutcome`` text
is the message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

RETRIED = {429, 500, 502, 503, 504}


class PushError(Exception):
    """The server did not take the Bundle; the message says why."""


def _outcome(body: bytes) -> str:
    """The diagnostics of an OperationOutcome, else the start of the body."""
    try:
        data = json.loads(body)
        issues = data.get("issue", []) if isinstance(data, dict) else []
        texts = [i.get("diagnostics") or i.get("details", {}).get("text") for i in issues if isinstance(i, dict)]
        if any(texts):
            return "; ".join(t for t in texts if t)[:300]
    except (json.JSONDecodeError, AttributeError):
        pass
    return body[:200].decode(errors="replace")


def push_bundle(
    base_url: str,
    bundle: dict,
    token: str | None = None,
    attempts: int = 4,
    timeout_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """POST ``bundle`` to ``base_url``; the server's transaction-response Bundle, or :class:`PushError`."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PushError(f"{base_url!r} is not an http(s):// FHIR base address")
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(bundle).encode()
    problem = ""
    for attempt in range(attempts):
        if attempt:
            sleep(float(2 ** (attempt - 1)))
        request = urllib.request.Request(base_url.rstrip("/"), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}: {_outcome(exc.read())}"
            if exc.code not in RETRIED:
                raise PushError(f"{base_url} refused the Bundle ({problem})") from None
            continue
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
            continue
        except json.JSONDecodeError:
            raise PushError(f"{base_url} answered something that is not JSON") from None
        if not isinstance(answer, dict) or answer.get("type") != "transaction-response":
            raise PushError(f"{base_url} did not answer a transaction-response Bundle")
        return answer
    raise PushError(f"{base_url} did not take the Bundle after {attempts} attempts (last: {problem})")
