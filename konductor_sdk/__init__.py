"""Konductor: Kubernetes-native synchronization primitives for Python.

The public API is exactly :data:`__all__`; everything in underscore modules is private.
Blocking twins of the primitives live in :mod:`konductor_sdk.sync`.
"""

from ._client import Client as Client
from ._client import default_client as default_client
from ._errors import AlreadyExistsError as AlreadyExistsError
from ._errors import APIError as APIError
from ._errors import BarrierFailed as BarrierFailed
from ._errors import BarrierTimeout as BarrierTimeout
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ConflictError as ConflictError
from ._errors import ConflictExhausted as ConflictExhausted
from ._errors import ForbiddenError as ForbiddenError
from ._errors import GateFailed as GateFailed
from ._errors import InvalidObjectError as InvalidObjectError
from ._errors import KonductorError as KonductorError
from ._errors import LeadershipLost as LeadershipLost
from ._errors import NotFoundError as NotFoundError
from ._errors import OnceFailed as OnceFailed
from ._errors import PermitLost as PermitLost
from ._errors import WouldBlock as WouldBlock
from ._identity import Identity as Identity
from ._identity import PodRef as PodRef
from .barrier import Arrival as Arrival
from .barrier import Barrier as Barrier
from .barrier import BarrierStatistics as BarrierStatistics
from .barrier import BarrierStatus as BarrierStatus
from .election import ElectionConfig as ElectionConfig
from .election import ElectorStatistics as ElectorStatistics
from .election import LeaderElector as LeaderElector
from .gate import Condition as Condition
from .gate import ConditionState as ConditionState
from .gate import Gate as Gate
from .gate import GateStatistics as GateStatistics
from .gate import GateStatus as GateStatus
from .lease import CandidateInfo as CandidateInfo
from .lease import HeldLease as HeldLease
from .lease import Lease as Lease
from .lease import LeaseStatistics as LeaseStatistics
from .lease import LeaseStatus as LeaseStatus
from .mutex import Mutex as Mutex
from .once import Once as Once
from .once import OnceStatistics as OnceStatistics
from .once import OnceStatus as OnceStatus
from .rwmutex import RWMutex as RWMutex
from .semaphore import HolderInfo as HolderInfo
from .semaphore import Permit as Permit
from .semaphore import Semaphore as Semaphore
from .semaphore import SemaphoreStatistics as SemaphoreStatistics
from .semaphore import SemaphoreStatus as SemaphoreStatus
from .semaphore import WaiterInfo as WaiterInfo
from .stages import Stages as Stages
from .stages import StagesStatistics as StagesStatistics
from .waitgroup import WaitGroup as WaitGroup
from .waitgroup import WaitGroupStatistics as WaitGroupStatistics
from .waitgroup import WaitGroupStatus as WaitGroupStatus

__version__ = "0.1.0"

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
    "WaitGroup",
    "WaitGroupStatistics",
    "WaitGroupStatus",
    "WaiterInfo",
    "WouldBlock",
    "default_client",
]
