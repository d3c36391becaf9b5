"""Blocking twins of the async primitives, for scripts: ``with Semaphore("gpu"):``.

Every call runs the async implementation in one background event loop (see ``_portal``),
so semantics are identical; only the calling convention differs. Errors, configuration
and status classes are shared with :mod:`konductor_sdk`.
"""

from .barrier import Barrier as Barrier
from .barrier import BarrierStatistics as BarrierStatistics
from .barrier import BarrierStatus as BarrierStatus
from .barrier import Once as Once
from .barrier import OnceStatistics as OnceStatistics
from .barrier import OnceStatus as OnceStatus
from .barrier import Stages as Stages
from .barrier import StagesStatistics as StagesStatistics
from .barrier import WaitGroup as WaitGroup
from .barrier import WaitGroupStatistics as WaitGroupStatistics
from .barrier import WaitGroupStatus as WaitGroupStatus
from .gate import Condition as Condition
from .gate import Gate as Gate
from .gate import GateStatistics as GateStatistics
from .gate import GateStatus as GateStatus
from .lease import HeldLease as HeldLease
from .lease import LeaderElector as LeaderElector
from .lease import Lease as Lease
from .lease import Term as Term
from .semaphore import Mutex as Mutex
from .semaphore import Permit as Permit
from .semaphore import RWMutex as RWMutex
from .semaphore import Semaphore as Semaphore

__all__ = [
    "Barrier",
    "BarrierStatistics",
    "BarrierStatus",
    "Condition",
    "Gate",
    "GateStatistics",
    "GateStatus",
    "HeldLease",
    "LeaderElector",
    "Lease",
    "Mutex",
    "Once",
    "OnceStatistics",
    "OnceStatus",
    "Permit",
    "RWMutex",
    "Semaphore",
    "Stages",
    "StagesStatistics",
    "Term",
    "WaitGroup",
    "WaitGroupStatistics",
    "WaitGroupStatus",
]
