"""Konductor: Kubernetes-native synchronization primitives for Python.

The public API is exactly :data:`__all__`; everything in underscore modules is private.
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

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AlreadyExistsError",
    "BarrierFailed",
    "BarrierTimeout",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "ConflictExhausted",
    "ForbiddenError",
    "GateFailed",
    "Identity",
    "InvalidObjectError",
    "KonductorError",
    "LeadershipLost",
    "NotFoundError",
    "OnceFailed",
    "PermitLost",
    "PodRef",
    "WouldBlock",
    "default_client",
]
