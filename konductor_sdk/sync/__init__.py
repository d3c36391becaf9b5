"""Blocking twins of the async primitives, for scripts: ``with Semaphore("gpu"):``.

Every class here is the twin of the :mod:`konductor_sdk` class of the same name: the same
methods, parameters, defaults and docstrings, written from the async API by
``python -m konductor_sdk.sync._generate`` (run it after an async change; the parity
test fails until then). Status, statistics and configuration classes are the async ones,
re-exported.

How the blocking calls behave:

* Every call runs the async implementation in one background event loop (a daemon thread
  with an anyio ``BlockingPortal``), so the semantics are the async ones; renewals keep
  running there while the calling thread works.
* Ctrl-C while a call blocks cancels it in the loop, as cancellation does in the async
  API (a waiter leaves the queue; a permit granted just then is given back).
* A blocking ``with`` body cannot be cancelled: a permit or lease lost (or preempted)
  while held is reported by ``permit.lost`` / ``permit.preempt_requested`` /
  ``held.lost`` during the body, given back when the block ends, and raised then
  (:class:`~konductor_sdk.PermitLost`, :class:`~konductor_sdk.LeadershipLost`).
* Callbacks (``Once.run``'s function, the elector's callbacks) run in worker threads.
* Clients: primitives made without ``client=`` share the loop's default client
  (:func:`default_client`). Make your own with :class:`Client` (``with Client(...) as
  client:``, or ``client.close()``). :func:`shutdown` closes them all and stops the
  loop; it also runs at interpreter exit.
"""

from ._portal import shutdown as shutdown
from ._twin import Event as Event
from .barrier import Arrival as Arrival
from .barrier import Barrier as Barrier
from .barrier import BarrierStatistics as BarrierStatistics
from .barrier import BarrierStatus as BarrierStatus
from .client import Client as Client
from .client import default_client as default_client
from .election import ElectionConfig as ElectionConfig
from .election import ElectorStatistics as ElectorStatistics
from .election import LeaderElector as LeaderElector
from .election import Term as Term
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

__all__ = [
    "Arrival",
    "Barrier",
    "BarrierStatistics",
    "BarrierStatus",
    "CandidateInfo",
    "Client",
    "Condition",
    "ConditionState",
    "ElectionConfig",
    "ElectorStatistics",
    "Event",
    "Fence",
    "FencedOut",
    "FencingToken",
    "Gate",
    "GateStatistics",
    "GateStatus",
    "HeldLease",
    "HolderInfo",
    "LeaderElector",
    "Lease",
    "LeaseStatistics",
    "LeaseStatus",
    "Mutex",
    "Once",
    "OnceStatistics",
    "OnceStatus",
    "Permit",
    "RWMutex",
    "Semaphore",
    "SemaphoreStatistics",
    "SemaphoreStatus",
    "Stages",
    "StagesStatistics",
    "Term",
    "WaitGroup",
    "WaitGroupStatistics",
    "WaitGroupStatus",
    "WaiterInfo",
    "default_client",
    "shutdown",
]
