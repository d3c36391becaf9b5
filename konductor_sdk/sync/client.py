"""Blocking twins of :mod:`konductor_sdk._kernel.client` (generated, do not edit).

The connection every primitive shares: store, shared watches, identity, background tasks.

A :class:`Client` is cheap to create and connects lazily. Primitives take ``client=``;
without one they use :func:`default_client`, one per event loop, configured from the
environment (in-cluster config, else ``KUBECONFIG``/``~/.kube/config``).

Background work that belongs to the client rather than to one caller (the shared watches,
renewers of permits acquired without ``with``) runs in one anyio task group owned by
the client; :meth:`Client.aclose` (or leaving ``with client:``) cancels all of it.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import Any, final

from konductor_sdk import Identity
from konductor_sdk._kernel import client as _client
from konductor_sdk._kernel.clock import SYSTEM_CLOCK, Clock
from konductor_sdk._kernel.objects import ResourceKind
from konductor_sdk._kernel.store import Store
from konductor_sdk._kernel.watch import KindWatch

from . import _context, _portal, _twin

__all__ = [
    "Client",
    "default_client",
]


@final
class Client(_context.BlockingContext, _twin.Twin[_client.Client]):
    """A connection to one cluster.

    Args:
        kubeconfig: path to a kubeconfig file; default: in-cluster config when running in
            a pod, else ``$KUBECONFIG`` or ``~/.kube/config``.
        context: kubeconfig context to use.
        namespace: default namespace for primitives; default: ``$KONDUCTOR_NAMESPACE``,
            else the pod's namespace (``POD_NAMESPACE`` or the service-account file), else
            the context's, else ``default``.
        identity: who this process is; default: detected (see ``_identity``).
        store: a ready :class:`~konductor_sdk._kernel.store.Store` (tests, custom transports);
            when given, ``kubeconfig``/``context`` are ignored.
        clock: time source for expiry and renewal deadlines.
        retry_budget: seconds the shared watches keep retrying while the API server is
            unreachable (connection errors, timeouts, 5xx) before every waiter gets
            :class:`~konductor_sdk.UnreachableError`; ``math.inf`` retries forever.
            Default: ``$KONDUCTOR_RETRY_BUDGET``, else 30. A 403 on list/watch is raised
            at once (:class:`~konductor_sdk.ForbiddenError`), never retried.

    Raises:
        ConfigurationError: a bad ``namespace`` or ``retry_budget`` (or environment
            variable).
    """

    def __init__(
        self,
        *,
        kubeconfig: str | PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
        identity: Identity | None = None,
        store: Store | None = None,
        clock: Clock = SYSTEM_CLOCK,
        retry_budget: float | None = None,
    ) -> None:
        self._bind(
            _portal.call(
                _client.Client,
                kubeconfig=kubeconfig,
                context=context,
                namespace=namespace,
                identity=identity,
                store=store,
                clock=clock,
                retry_budget=retry_budget,
            )
        )

    @property
    def retry_budget(self) -> float:
        return self._async.retry_budget

    identity = _twin.attribute(_client.Client, lambda a: a.identity)

    @property
    def clock(self) -> Clock:
        return self._async.clock

    @property
    def store(self) -> Store:
        return self._async.store

    @property
    def namespace(self) -> str:
        return self._async.namespace

    def connect(self) -> Client:
        """Load configuration and learn the namespace; idempotent and concurrency-safe."""
        return Client._wrap(_portal.run(self._async.connect))

    def whoami(self) -> str:
        """The user name the API server knows this client as (asked once, then cached).

        Entries a client writes record it as their creator; the admission policies check
        that it is the requesting user, so a client cannot claim to be someone else.
        """
        return _portal.run(self._async.whoami)

    def watch(self, kind: ResourceKind, namespace: str | None) -> KindWatch:
        """The shared, synced watch of ``kind`` in ``namespace`` (``None``: all namespaces)."""
        return _portal.run(self._async.watch, kind, namespace)

    def start_watch(self, kind: ResourceKind, namespace: str | None) -> KindWatch:
        """The shared watch of ``kind`` in ``namespace``, started if needed, without waiting
        for it to sync (check ``watch.synced`` / ``watch.last_error``). Needs :meth:`connect`.
        A watch that failed (see :attr:`KindWatch.failed`) is replaced by a new one.
        """
        return _portal.call(self._async.start_watch, kind, namespace)

    def cached_watch(self, kind: ResourceKind, namespace: str | None) -> KindWatch | None:
        """The watch of ``kind``/``namespace`` if one is already synced, else ``None``."""
        return _portal.call(self._async.cached_watch, kind, namespace)

    def spawn(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` in the client's task group (ended by :meth:`aclose`).

        A background task that fails is logged, never raised into that group: it would
        cancel every other task of the client, its shared watches and session renewers,
        and leave every waiter of every primitive hanging.
        """
        _portal.call(self._async.spawn, _twin.awaitable(func), *args)

    def close(self) -> None:
        """Cancel background work and close the HTTP session."""
        _portal.run(self._async.aclose)

    def __enter__(self) -> Client:
        return self._enter_block(_context.blocking(self._async, Client._wrap))


def default_client() -> Client:
    """The process's client for the running event loop, configured from the environment."""
    return Client._wrap(_portal.call(_client.default_client))
