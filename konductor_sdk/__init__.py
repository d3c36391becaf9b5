"""Konductor: Kubernetes-native synchronization primitives for Python.

The public API is exactly :data:`__all__`; everything in underscore modules is private.
Blocking twins of the primitives live in :mod:`konductor_sdk.sync`.
"""

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
from konductor_sdk._kernel.errors import WouldBlock as WouldBlock
from konductor_sdk._kernel.identity import Identity as Identity
from konductor_sdk._kernel.identity import PodRef as PodRef

from .barrier import Arrival as Arrival
from .barrier import Barrier as Barrier
from .barrier import BarrierStatistics as BarrierStatistics
from .barrier import BarrierStatus as BarrierStatus
from .election import ElectionConfig as ElectionConfig
from .election import ElectorStatistics as ElectorStatistics
from .election import LeaderElector as LeaderElector
from .fencing import Fence as Fence
from .fencing import FencedOut as FencedOut
from .fencing import FencingToken as FencingToken
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
    "WaitGroup",
    "WaitGroupStatistics",
    "WaitGroupStatus",
    "WaiterInfo",
    "WouldBlock",
    "default_client",
]
