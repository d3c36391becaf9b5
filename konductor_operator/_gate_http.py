"""HTTP probes for the Gate's ``http`` conditions: a security surface, so fenced in.

An operator that makes HTTP requests on behalf of anyone who can create a Gate could be
used to reach internal services. Probes therefore run only when the operator was started
with ``--enable-http-probes``, only to URLs under one of its ``--http-probe-allow`` URL
prefixes (:class:`AllowedPrefix`: scheme, host, port and path prefix all must match, after
dot segments are resolved; encoded slashes, dots and backslashes are refused), without
following redirects (a redirect could leave the allow-list), without proxies from the
environment, reading at most :data:`MAX_BODY_BYTES` of the answer. What comes back into the
gate's status is the verdict and the status code, never the body, and every failure to get
an HTTP answer (refused, reset, timeout, TLS, name resolution, not HTTP) is reported with
the one message :data:`NO_ANSWER`, so a probe cannot be used to scan which ports are
closed, open or speak TLS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final, final

import aiohttp
import attrs
from yarl import URL

from konductor_sdk._kernel.errors import ConfigurationError
from konductor_sdk._machines.gate import LeafResult
from konductor_sdk._machines.gate_spec import Leaf

MAX_BODY_BYTES: Final = 64 * 1024
DISABLED: Final = "HTTP probes are disabled in this operator (--enable-http-probes)"
NO_ANSWER: Final = "no HTTP answer"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SMUGGLING: Final = re.compile(r"%2[ef]|%5c|\\", re.IGNORECASE)


def _parts(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path)`` of an absolute http(s) URL, dot segments resolved.

    Raises:
        ValueError: not an absolute http(s) URL with a host, carries credentials or a
            fragment, or its path hides separators in percent-encodings or backslashes.
    """
    if _SMUGGLING.search(url.split("?", 1)[0]):
        raise ValueError("encoded '/', '.' or '\\' in the path")
    parsed = URL(url)
    scheme = (parsed.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or not parsed.host:
        raise ValueError("must be http(s)://host/...")
    if parsed.user is not None or parsed.password is not None:
        raise ValueError("credentials in the URL")
    if parsed.fragment:
        raise ValueError("fragment in the URL")
    port = parsed.explicit_port or _DEFAULT_PORTS[scheme]
    return scheme, parsed.host.lower(), port, parsed.path or "/"


@final
@attrs.frozen
class AllowedPrefix:
    """One ``--http-probe-allow`` entry: ``scheme://host[:port][/path-prefix]``.

    A URL is admitted when scheme, host and port (explicit, or the scheme's default) are
    equal and its path is the prefix's path or lies below it: ``http://h:8080/health``
    admits ``/health`` and ``/health/db``, not ``/healthz`` or ``/admin``.
    """

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, text: str) -> AllowedPrefix:
        """Raises :class:`ConfigurationError` naming the entry."""
        try:
            scheme, host, port, path = _parts(text)
            if "?" in text:
                raise ValueError("a query in an allow-list prefix")
        except ValueError as exc:
            raise ConfigurationError(
                f"http_probe_allow entries must be URL prefixes "
                f"(scheme://host[:port][/path]), got {text!r}: {exc}"
            ) from None
        return cls(scheme, host, port, path)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"

    def admits(self, scheme: str, host: str, port: int, path: str) -> bool:
        if (scheme, host, port) != (self.scheme, self.host, self.port):
            return False
        base = self.path.rstrip("/")
        return path == self.path or path == base or path.startswith(base + "/")


def refusal(url: str, *, enabled: bool, allowed: Iterable[AllowedPrefix]) -> str | None:
    """Why the operator will not probe ``url``; ``None`` if it will."""
    if not enabled:
        return DISABLED
    try:
        scheme, host, port, path = _parts(url)
    except ValueError as exc:
        return f"URL {url!r} is not probed: {exc}"
    if not any(prefix.admits(scheme, host, port, path) for prefix in allowed):
        return f"URL {url!r} is not under any of the operator's --http-probe-allow prefixes"
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
    """One probe of ``leaf`` (already allowed by :func:`refusal`); never raises on I/O.

    Every way of not getting an HTTP answer gives the same message (:data:`NO_ANSWER`).
    """
    params = leaf.params
    url, want = URL(str(params["url"])), int(params["expectStatus"])
    host = url.host
    timeout = aiohttp.ClientTimeout(total=float(params["timeoutSeconds"]))
    try:
        async with session.get(url, allow_redirects=False, timeout=timeout) as resp:
            body = await resp.content.read(MAX_BODY_BYTES + 1)
            code = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        return LeafResult(False, f"GET {host}: {NO_ANSWER}")
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
