"""The Konductor error tree.

Every error the SDK raises on purpose derives from :class:`KonductorError`::

    KonductorError
    ├── ConfigurationError (ValueError)   bad arguments, caught before any I/O
    ├── WouldBlock                        a *_nowait call could not proceed
    ├── ConflictExhausted                 CAS retries ran out (carries attempts, last rv)
    ├── PermitLost                        a semaphore/mutex permit ended while held
    ├── LeadershipLost                    a lease ended while held
    ├── BarrierFailed                     the barrier failed (reset, expected dropped...)
    │   └── BarrierTimeout                the barrier's spec.timeout passed before it opened
    ├── GateFailed                        a gate can no longer open
    ├── OnceFailed                        the function run by Once raised
    └── APIError                          anything else the server said (the HTTP
        │                                 client's exception is the __cause__)
        ├── ForbiddenError                RBAC does not allow the request (HTTP 403)
        ├── NotFoundError                 the object does not exist (HTTP 404)
        ├── AlreadyExistsError            the object exists already (HTTP 409 on create)
        ├── ConflictError                 a write lost a resourceVersion race (HTTP 409)
        ├── InvalidObjectError (ValueError)  the server rejected the object (HTTP 422)
        └── UnreachableError              no answer within the client's retry budget

Messages name the object and the field, e.g. ``permits must be >= 1, got 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class KonductorError(Exception):
    """Base class of every error raised by Konductor on purpose."""


class ConfigurationError(KonductorError, ValueError):
    """An argument or spec field is out of range; raised before anything is written."""


class WouldBlock(KonductorError):
    """A ``*_nowait`` call could not proceed without waiting."""


class APIError(KonductorError):
    """The API server answered with an error the SDK has no better name for.

    Attributes:
        status: the HTTP status code (0 when the request never got an answer).
        reason: the Kubernetes ``Status.reason`` (e.g. ``Forbidden``), if any.
        body: the decoded ``Status`` object, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.body: Mapping[str, Any] = body or {}


class ForbiddenError(APIError):
    """The caller's RBAC does not allow the request (HTTP 403)."""


class NotFoundError(APIError):
    """The object does not exist (HTTP 404)."""


class AlreadyExistsError(APIError):
    """An object with that name exists already (HTTP 409 on create)."""


class ConflictError(APIError):
    """A write carried a stale resourceVersion (HTTP 409), or a JSON-patch test failed."""


class InvalidObjectError(APIError, ValueError):
    """The server's schema/CEL validation rejected the object (HTTP 422)."""


class UnreachableError(APIError):
    """The API server could not be reached (connection refused or reset, timeouts, 5xx
    answers) for longer than the client's ``retry_budget``; waiters on the shared watch
    get this instead of waiting forever.

    Attributes:
        budget: the retry budget in seconds that was spent.
    """

    def __init__(
        self,
        message: str,
        *,
        budget: float = 0.0,
        status: int = 0,
        reason: str = "",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status=status, reason=reason, body=body)
        self.budget = budget


class ConflictExhausted(KonductorError):
    """A compare-and-swap loop lost the race too many times in a row.

    Attributes:
        attempts: how many writes were tried.
        resource_version: the last resourceVersion seen.
    """

    def __init__(self, message: str, *, attempts: int, resource_version: str) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.resource_version = resource_version


class PermitLost(KonductorError):
    """A permit ended while its holder still held it (TTL ran out, reaped, preempted)."""


class LeadershipLost(KonductorError):
    """A lease ended while its holder still held it."""


class BarrierFailed(KonductorError):
    """A barrier can no longer open for this generation.

    Attributes:
        arrived: holder ids that had arrived.
        missing: holder ids (or counts, as ``"<n more>"``) that had not.
    """

    def __init__(
        self, message: str, *, arrived: Sequence[str] = (), missing: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.arrived = tuple(arrived)
        self.missing = tuple(missing)


class BarrierTimeout(BarrierFailed):
    """The barrier's ``spec.timeoutSeconds`` passed before it opened."""


class GateFailed(KonductorError):
    """A gate failed (timeout, or a condition that can never become true)."""


class OnceFailed(KonductorError):
    """The function guarded by a Once raised; carries the recorded error message."""


__all__ = [
    "APIError",
    "AlreadyExistsError",
    "BarrierFailed",
    "BarrierTimeout",
    "ConfigurationError",
    "ConflictError",
    "ConflictExhausted",
    "ForbiddenError",
    "GateFailed",
    "InvalidObjectError",
    "KonductorError",
    "LeadershipLost",
    "NotFoundError",
    "OnceFailed",
    "PermitLost",
    "UnreachableError",
    "WouldBlock",
]

# Public as ``konductor_sdk.<Name>`` (reprs, tracebacks, pickling), as httpx does.
for _name in __all__:
    globals()[_name].__module__ = "konductor_sdk"
del _name
