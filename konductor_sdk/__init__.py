"""Konductor: Kubernetes-native synchronization primitives for Python.

The public API is exactly :data:`__all__`; everything in underscore modules is private.
Blocking twins of the primitives live in :mod:`konductor_sdk.sync`.

Names are resolved on first use (PEP 562 ``__getattr__``), so ``import konductor_sdk`` is
cheap and a program (or ``koncli --help``) pays only for the modules it touches; the HTTP
stack is imported when a :class:`Client` first connects. Classes defined in private modules
carry ``__module__ = "konductor_sdk"`` (as httpx does), so reprs and tracebacks name them
by their public path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from konductor_sdk._kernel.client import Client as Client
    from konductor_sdk._kernel.client import default_client as default_client
    from konductor_sdk._kernel.errors import AlreadyExistsError as AlreadyExistsError
    from konductor_sdk._kernel.errors import APIError as APIError
    from konductor_sdk._kernel.errors import BarrierFailed as BarrierFailed
    from konductor_sdk._kernel.errors import BarrierTimeout as BarrierTimeout
    from konductor_sdk._kernel.errors import ConfigurationError as ConfigurationError
    from konductor_sdk._kernel.errors import ConflictError as ConflictError
    from konductor_sdk._kernel.errors import ConflictExhausted as ConflictExhausted
    from konductor_sdk._kernel.errors import ForbiddenError as ForbiddenError
    from konductor_sdk._kernel.errors import GateFailed as GateFailed
    from konductor_sdk._kernel.errors import InvalidObjectError as InvalidObjectError
    from konductor_sdk._kernel.errors import KonductorError as KonductorError
    from konductor_sdk._kernel.errors import LeadershipLost as LeadershipLost
    from konductor_sdk._kernel.errors import NotFoundError as NotFoundError
    from konductor_sdk._kernel.errors import OnceFailed as OnceFailed
    from konductor_sdk._kernel.errors import PermitLost as PermitLost
    from konductor_sdk._kernel.errors import UnreachableError as UnreachableError
    from konductor_sdk._kernel.errors import WouldBlock as WouldBlock
    from konductor_sdk._kernel.identity import Identity as Identity
    from konductor_sdk._kernel.identity import PodRef as PodRef
    from konductor_sdk.barrier import Arrival as Arrival
    from konductor_sdk.barrier import Barrier as Barrier
    from konductor_sdk.barrier import BarrierStatistics as BarrierStatistics
    from konductor_sdk.barrier import BarrierStatus as BarrierStatus
    from konductor_sdk.election import ElectionConfig as ElectionConfig
    from konductor_sdk.election import ElectorStatistics as ElectorStatistics
    from konductor_sdk.election import LeaderElector as LeaderElector
    from konductor_sdk.fencing import Fence as Fence
    from konductor_sdk.fencing import FencedOut as FencedOut
    from konductor_sdk.fencing import FencingToken as FencingToken
    from konductor_sdk.gate import Condition as Condition
    from konductor_sdk.gate import ConditionState as ConditionState
    from konductor_sdk.gate import Gate as Gate
    from konductor_sdk.gate import GateStatistics as GateStatistics
    from konductor_sdk.gate import GateStatus as GateStatus
    from konductor_sdk.lease import CandidateInfo as CandidateInfo
    from konductor_sdk.lease import HeldLease as HeldLease
    from konductor_sdk.lease import Lease as Lease
    from konductor_sdk.lease import LeaseStatistics as LeaseStatistics
    from konductor_sdk.lease import LeaseStatus as LeaseStatus
    from konductor_sdk.mutex import Mutex as Mutex
    from konductor_sdk.once import Once as Once
    from konductor_sdk.once import OnceStatistics as OnceStatistics
    from konductor_sdk.once import OnceStatus as OnceStatus
    from konductor_sdk.rwmutex import RWMutex as RWMutex
    from konductor_sdk.semaphore import HolderInfo as HolderInfo
    from konductor_sdk.semaphore import Permit as Permit
    from konductor_sdk.semaphore import Semaphore as Semaphore
    from konductor_sdk.semaphore import SemaphoreStatistics as SemaphoreStatistics
    from konductor_sdk.semaphore import SemaphoreStatus as SemaphoreStatus
    from konductor_sdk.semaphore import WaiterInfo as WaiterInfo
    from konductor_sdk.stages import Stages as Stages
    from konductor_sdk.stages import StagesStatistics as StagesStatistics
    from konductor_sdk.waitgroup import WaitGroup as WaitGroup
    from konductor_sdk.waitgroup import WaitGroupStatistics as WaitGroupStatistics
    from konductor_sdk.waitgroup import WaitGroupStatus as WaitGroupStatus

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_EXPORTS: dict[str, str] = {
    "APIError": "konductor_sdk._kernel.errors",
    "AlreadyExistsError": "konductor_sdk._kernel.errors",
    "Arrival": "konductor_sdk.barrier",
    "Barrier": "konductor_sdk.barrier",
    "BarrierFailed": "konductor_sdk._kernel.errors",
    "BarrierStatistics": "konductor_sdk.barrier",
    "BarrierStatus": "konductor_sdk.barrier",
    "BarrierTimeout": "konductor_sdk._kernel.errors",
    "CandidateInfo": "konductor_sdk.lease",
    "Client": "konductor_sdk._kernel.client",
    "Condition": "konductor_sdk.gate",
    "ConditionState": "konductor_sdk.gate",
    "ConfigurationError": "konductor_sdk._kernel.errors",
    "ConflictError": "konductor_sdk._kernel.errors",
    "ConflictExhausted": "konductor_sdk._kernel.errors",
    "ElectionConfig": "konductor_sdk.election",
    "ElectorStatistics": "konductor_sdk.election",
    "Fence": "konductor_sdk.fencing",
    "FencedOut": "konductor_sdk.fencing",
    "FencingToken": "konductor_sdk.fencing",
    "ForbiddenError": "konductor_sdk._kernel.errors",
    "Gate": "konductor_sdk.gate",
    "GateFailed": "konductor_sdk._kernel.errors",
    "GateStatistics": "konductor_sdk.gate",
    "GateStatus": "konductor_sdk.gate",
    "HeldLease": "konductor_sdk.lease",
    "HolderInfo": "konductor_sdk.semaphore",
    "Identity": "konductor_sdk._kernel.identity",
    "InvalidObjectError": "konductor_sdk._kernel.errors",
    "KonductorError": "konductor_sdk._kernel.errors",
    "LeaderElector": "konductor_sdk.election",
    "LeadershipLost": "konductor_sdk._kernel.errors",
    "Lease": "konductor_sdk.lease",
    "LeaseStatistics": "konductor_sdk.lease",
    "LeaseStatus": "konductor_sdk.lease",
    "Mutex": "konductor_sdk.mutex",
    "NotFoundError": "konductor_sdk._kernel.errors",
    "Once": "konductor_sdk.once",
    "OnceFailed": "konductor_sdk._kernel.errors",
    "OnceStatistics": "konductor_sdk.once",
    "OnceStatus": "konductor_sdk.once",
    "Permit": "konductor_sdk.semaphore",
    "PermitLost": "konductor_sdk._kernel.errors",
    "PodRef": "konductor_sdk._kernel.identity",
    "RWMutex": "konductor_sdk.rwmutex",
    "Semaphore": "konductor_sdk.semaphore",
    "SemaphoreStatistics": "konductor_sdk.semaphore",
    "SemaphoreStatus": "konductor_sdk.semaphore",
    "Stages": "konductor_sdk.stages",
    "StagesStatistics": "konductor_sdk.stages",
    "UnreachableError": "konductor_sdk._kernel.errors",
    "WaitGroup": "konductor_sdk.waitgroup",
    "WaitGroupStatistics": "konductor_sdk.waitgroup",
    "WaitGroupStatus": "konductor_sdk.waitgroup",
    "WaiterInfo": "konductor_sdk.semaphore",
    "WouldBlock": "konductor_sdk._kernel.errors",
    "default_client": "konductor_sdk._kernel.client",
}

__all__ = [
    "APIError",
    "AlreadyExistsError",
    "Arrival",
    "Barrier",
    "BarrierFailed",
    "BarrierStatistics",
    "BarrierStatus",
    "BarrierTimeout",
    "CandidateInfo",
    "Client",
    "Condition",
    "ConditionState",
    "ConfigurationError",
    "ConflictError",
    "ConflictExhausted",
    "ElectionConfig",
    "ElectorStatistics",
    "Fence",
    "FencedOut",
    "FencingToken",
    "ForbiddenError",
    "Gate",
    "GateFailed",
    "GateStatistics",
    "GateStatus",
    "HeldLease",
    "HolderInfo",
    "Identity",
    "InvalidObjectError",
    "KonductorError",
    "LeaderElector",
    "LeadershipLost",
    "Lease",
    "LeaseStatistics",
    "LeaseStatus",
    "Mutex",
    "NotFoundError",
    "Once",
    "OnceFailed",
    "OnceStatistics",
    "OnceStatus",
    "Permit",
    "PermitLost",
    "PodRef",
    "RWMutex",
    "Semaphore",
    "SemaphoreStatistics",
    "SemaphoreStatus",
    "Stages",
    "StagesStatistics",
    "UnreachableError",
    "WaitGroup",
    "WaitGroupStatistics",
    "WaitGroupStatus",
    "WaiterInfo",
    "WouldBlock",
    "default_client",
]


if not TYPE_CHECKING:  # type checkers read the imports above; a typo must stay an error

    def __getattr__(name: str) -> object:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
        defined_in = str(getattr(value, "__module__", ""))
        if any(part.startswith("_") for part in defined_in.split(".")):
            value.__module__ = __name__  # defined in a private module: show the public path
        globals()[name] = value  # later lookups skip this function
        return value


def __dir__() -> list[str]:
    hidden = {"TYPE_CHECKING", "annotations", "_EXPORTS"}
    return sorted({*globals(), *__all__} - hidden)
