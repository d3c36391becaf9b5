"""HTTP probes for the Gate's ``http`` conditions: a security surface, so fenced in.

An operator that makes HTTP requests on behalf of anyone who can create a Gate could be
used to reach internal services. Probes therefore run only when the operator was started
with ``--enable-http-probes``, only to hosts named on its ``--http-probe-allow-host``
list (exact, case-insensitive host names or IP literals), without following redirects
(a redirect could leave the allow-list), without proxies from the environment, reading at
most :data:`MAX_BODY_BYTES` of the answer. What comes back into the gate's status is the
verdict and the status code, never the body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from konductor_sdk._machines.gate import LeafResult
from konductor_sdk._machines.gate_spec import Leaf

MAX_BODY_BYTES: Final = 64 * 1024
DISABLED: Final = "HTTP probes are disabled in this operator (--enable-http-probes)"


def refusal(url: str, *, enabled: bool, allow_hosts: Iterable[str]) -> str | None:
    """Why the operator will not probe ``url``; ``None`` if it will."""
    if not enabled:
        return DISABLED
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme not in ("http", "https") or not host:
        return f"URL must be http(s)://host/..., got {url!r}"
    if parts.username or parts.password:
        return "URLs with credentials are not probed"
    if host not in {h.lower() for h in allow_hosts}:
        return f"host {host!r} is not on the operator's --http-probe-allow-host list"
    return None


def field_value(data: Any, path: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted path (``status.ready``, ``items.0.ok``) in JSON data."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False, None
    return True, data


def _matches(value: Any, expected: str | None) -> bool:
    if expected is None:
        return bool(value)
    try:
        return bool(value == json.loads(expected))
    except ValueError:
        return str(value) == expected


async def probe(session: aiohttp.ClientSession, leaf: Leaf) -> LeafResult:
    """One probe of ``leaf`` (already allowed by :func:`refusal`); never raises on I/O."""
    params = leaf.params
    url, want = str(params["url"]), int(params["expectStatus"])
    host = urlsplit(url).hostname
    timeout = aiohttp.ClientTimeout(total=float(params["timeoutSeconds"]))
    try:
        async with session.get(url, allow_redirects=False, timeout=timeout) as resp:
            body = await resp.content.read(MAX_BODY_BYTES + 1)
            code = resp.status
    except TimeoutError:
        return LeafResult(False, f"GET {host}: no answer within {params['timeoutSeconds']}s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return LeafResult(False, f"GET {host}: {type(exc).__name__}")
    if code != want:
        return LeafResult(False, f"GET {host}: status {code}, want {want}")
    field = params.get("jsonField")
    if field is None:
        return LeafResult(True, f"GET {host}: status {code}")
    if len(body) > MAX_BODY_BYTES:
        return LeafResult(False, f"GET {host}: body larger than {MAX_BODY_BYTES // 1024} KiB")
    try:
        data = json.loads(body)
    except ValueError:
        return LeafResult(False, f"GET {host}: body is not JSON")
    found, value = field_value(data, str(field))
    if not found:
        return LeafResult(False, f"GET {host}: no field {field}")
    expected = params.get("jsonValue")
    ok = _matches(value, None if expected is None else str(expected))
    shown = json.dumps(value)[:64]
    return LeafResult(ok, f"GET {host}: {field} = {shown}")
