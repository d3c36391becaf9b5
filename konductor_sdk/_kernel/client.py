"""The connection every primitive shares: store, shared watches, identity, background tasks.

A :class:`Client` is cheap to create and connects lazily. Primitives take ``client=``;
without one they use :func:`default_client`, one per event loop, configured from the
environment (in-cluster config, else ``KUBECONFIG``/``~/.kube/config``).

Background work that belongs to the client rather than to one caller (the shared watches,
renewers of permits acquired without ``async with``) runs in one anyio task group owned by
the client; :meth:`Client.aclose` (or leaving ``async with client:``) cancels all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import importlib.util
import logging
import math
import os
import sys
import threading
import types
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, final

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup

from konductor_sdk._kernel.clock import SYSTEM_CLOCK, Clock
from konductor_sdk._kernel.errors import APIError, ConfigurationError, ForbiddenError, NotFoundError
from konductor_sdk._kernel.identity import SERVICE_ACCOUNT_NAMESPACE_FILE, Identity, PodRef, detect
from konductor_sdk._kernel.names import check_namespace
from konductor_sdk._kernel.objects import POD, SELF_SUBJECT_REVIEW, ResourceKind
from konductor_sdk._kernel.store import Store
from konductor_sdk._kernel.watch import KindWatch

log = logging.getLogger("konductor_sdk.client")

ENV_NAMESPACE = "KONDUCTOR_NAMESPACE"
ENV_RETRY_BUDGET = "KONDUCTOR_RETRY_BUDGET"
DEFAULT_RETRY_BUDGET = 30.0


@final
class Client:
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
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        namespace: str | None = None,
        identity: Identity | None = None,
        store: Store | None = None,
        clock: Clock = SYSTEM_CLOCK,
        retry_budget: float | None = None,
    ) -> None:
        self._kubeconfig = os.fspath(kubeconfig) if kubeconfig is not None else None
        self._context = context
        if namespace is None:
            namespace = os.environ.get(ENV_NAMESPACE) or None
            if namespace is not None:
                check_namespace(namespace, field=f"${ENV_NAMESPACE}")
        else:
            check_namespace(namespace)
        self.retry_budget = _retry_budget(retry_budget)
        self._namespace_arg = namespace
        self._namespace: str | None = namespace
        self.identity = identity if identity is not None else detect()
        self._store = store
        self._api_client: Any = None
        self.clock = clock
        self._watches: dict[tuple[ResourceKind, str | None], KindWatch] = {}
        self._connect_lock: anyio.Lock | None = None
        self._host_task: asyncio.Task[None] | None = None
        self._tg: TaskGroup | None = None
        self._pending: list[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...]]] = []
        self._closed = False
        self._close_hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._selected: dict[_SelectedKey, _Selected] = {}
        self._username: str | None = None
        self._whoami_lock: anyio.Lock | None = None
        self._extensions: dict[type, object] = {}
        """Per-client state of kernel services (sessions...), keyed by their class."""

    def __repr__(self) -> str:
        return (
            f"<Client namespace={self._namespace!r} holder={self.identity.holder!r} "
            f"retry_budget={self.retry_budget:g}>"
        )

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("Client is not connected yet: await client.connect() first")
        return self._store

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            raise RuntimeError("Client is not connected yet: await client.connect() first")
        return self._namespace

    async def connect(self) -> Client:
        """Load configuration and learn the namespace; idempotent and concurrency-safe."""
        if self._closed:
            # A background task spawned just before aclose() may get here before its first
            # checkpoint; the checkpoint lets aclose()'s cancellation end it quietly
            # instead of failing the client's task group with this error.
            await anyio.lowlevel.checkpoint()
            raise RuntimeError("Client is closed")
        if self._store is not None and self._namespace is not None:
            return self
        if self._connect_lock is None:
            self._connect_lock = anyio.Lock()
        async with self._connect_lock:
            if self._store is None:
                self._store, context_ns = await self._load_config()
            else:
                context_ns = None
            if self._namespace is None:
                self._namespace = _pick_namespace(self.identity, context_ns)
            await self._learn_pod_uid()
        return self

    async def _load_config(self) -> tuple[Store, str | None]:
        # Imported here so that only the store layer depends on kubernetes_asyncio's
        # module layout at import time.
        from kubernetes_asyncio import config as kconfig
        from kubernetes_asyncio.client import ApiClient, Configuration

        from konductor_sdk._kernel.store import KubeStore

        configuration = Configuration()
        context_ns: str | None = None
        in_cluster = self._kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
        if in_cluster and not os.environ.get("KUBECONFIG"):
            kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            path = self._kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
            path = path or str(Path.home() / ".kube" / "config")
            if not Path(path).exists():  # noqa: ASYNC240 - one stat, before any I/O
                raise ConfigurationError(
                    f"kubeconfig: no such file {path!r} (pass kubeconfig= or set KUBECONFIG)"
                )
            try:
                loader = await kconfig.load_kube_config(
                    config_file=path,
                    context=self._context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            except kconfig.ConfigException as exc:
                raise ConfigurationError(_config_problem(path, self._context, exc)) from exc
            ns = (loader.current_context or {}).get("context", {}).get("namespace")
            context_ns = str(ns) if ns else None
        self._api_client = ApiClient(configuration=configuration)
        _abort_closed_tls(self._api_client)
        _read_environment_once(self._api_client)
        return KubeStore(self._api_client), context_ns

    async def _learn_pod_uid(self) -> None:
        pod = self.identity.pod
        if pod is None or pod.uid or self._store is None:
            return
        # Reaping by pod needs the UID; a pod can read itself only if RBAC allows, so this
        # is best effort and the holder is still reaped by TTL without it.
        try:
            obj = await self._store.get(POD, pod.namespace, pod.name)
        except (ForbiddenError, NotFoundError):
            return
        self.identity = Identity.for_pod(PodRef(pod.name, pod.namespace, obj.uid))

    async def whoami(self) -> str:
        """The user name the API server knows this client as (asked once, then cached).

        Entries a client writes record it as their creator; the admission policies check
        that it is the requesting user, so a client cannot claim to be someone else.
        """
        if self._username is None:
            # One review for every task asking at once (a thousand first acquires).
            if self._whoami_lock is None:
                self._whoami_lock = anyio.Lock()
            async with self._whoami_lock:
                if self._username is None:
                    await self.connect()
                    review = await self.store.create(
                        SELF_SUBJECT_REVIEW, None, {"metadata": {}, "spec": {}}
                    )
                    user = (review.status.get("userInfo") or {}).get("username")
                    if not user:
                        raise APIError(
                            "the API server did not say who this client is (SelfSubjectReview)"
                        )
                    self._username = str(user)
        return self._username

    def _add_close_hook(self, hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``await hook()`` in :meth:`aclose`, before the background tasks are cancelled."""
        self._close_hooks.append(hook)

    @contextlib.asynccontextmanager
    async def _watching(
        self,
        kind: ResourceKind,
        namespace: str,
        *,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> AsyncIterator[KindWatch]:
        """A synced watch of the objects of ``kind`` matching the selectors, shared by
        everyone in this client using the same selectors while inside the block.

        The watch stops :data:`WATCH_LINGER` seconds after its last user left (not at once:
        waiters on one target come and go, and restarting means listing again).
        """
        await self.connect()
        key = (kind, namespace, field_selector, label_selector)
        entry = self._selected.get(key)
        if entry is not None and entry.watch.failed is not None:
            entry.scope.cancel()  # (it ends by itself; a new user must not wait for that)
            entry = None
        if entry is None:
            watch = KindWatch(
                self.store,
                kind,
                namespace,
                field_selector=field_selector,
                label_selector=label_selector,
                retry_budget=self.retry_budget,
            )
            entry = self._selected[key] = _Selected(watch, anyio.CancelScope())
            self.spawn(self._run_selected, key, entry)
        entry.users += 1
        try:
            await entry.watch.wait_synced()
            yield entry.watch
        finally:
            entry.users -= 1
            entry.idle_since = anyio.current_time()

    async def _run_selected(self, key: _SelectedKey, entry: _Selected) -> None:
        async def linger() -> None:
            while True:
                await anyio.sleep(WATCH_LINGER)
                if entry.users == 0 and anyio.current_time() - entry.idle_since >= WATCH_LINGER:
                    entry.scope.cancel()
                    return

        try:
            with entry.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(linger)
                    await entry.watch.run()
        finally:
            if self._selected.get(key) is entry:
                del self._selected[key]

    async def watch(self, kind: ResourceKind, namespace: str | None) -> KindWatch:
        """The shared, synced watch of ``kind`` in ``namespace`` (``None``: all namespaces)."""
        await self.connect()
        watch = self.start_watch(kind, namespace)
        await watch.wait_synced()
        return watch

    def start_watch(self, kind: ResourceKind, namespace: str | None) -> KindWatch:
        """The shared watch of ``kind`` in ``namespace``, started if needed, without waiting
        for it to sync (check ``watch.synced`` / ``watch.last_error``). Needs :meth:`connect`.
        A watch that failed (see :attr:`KindWatch.failed`) is replaced by a new one.
        """
        key = (kind, namespace)
        watch = self._watches.get(key)
        if watch is None or watch.failed is not None:
            watch = KindWatch(self.store, kind, namespace, retry_budget=self.retry_budget)
            self._watches[key] = watch
            self.spawn(watch.run)
        return watch

    def cached_watch(self, kind: ResourceKind, namespace: str | None) -> KindWatch | None:
        """The watch of ``kind``/``namespace`` if one is already synced, else ``None``."""
        watch = self._watches.get((kind, namespace)) or self._watches.get((kind, None))
        if watch is not None and watch.synced.is_set() and watch.failed is None:
            return watch
        return None

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``func(*args)`` in the client's task group (ended by :meth:`aclose`).

        A background task that fails is logged, never raised into that group: it would
        cancel every other task of the client, its shared watches and session renewers,
        and leave every waiter of every primitive hanging.
        """
        if self._closed:
            raise RuntimeError("Client is closed")
        if self._tg is not None:
            self._tg.start_soon(self._contained, func, args, name=_task_name(func))
            return
        self._pending.append((func, args))
        if self._host_task is None:
            # The host task owns a task group for the client's lifetime. It is an asyncio
            # task (kubernetes_asyncio ties us to asyncio anyway) so that the client works
            # without ``async with``; inside it, everything is structured anyio.
            loop = asyncio.get_running_loop()
            self._host_task = loop.create_task(self._host(), name="konductor-client")

    async def _contained(
        self, func: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...]
    ) -> None:
        try:
            await func(*args)
        except Exception as exc:
            if self._closed:  # what a task meets while the client closes under it
                log.debug("background task %s ended on close: %r", _task_name(func), exc)
            else:
                log.exception("background task %s failed", _task_name(func))

    async def _host(self) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for func, args in self._pending:
                tg.start_soon(self._contained, func, args, name=_task_name(func))
            self._pending.clear()
            await anyio.sleep_forever()

    async def aclose(self) -> None:
        """Cancel background work and close the HTTP session."""
        if not self._closed and self._store is not None:
            for hook in self._close_hooks:
                with anyio.CancelScope(shield=True):
                    try:
                        await hook()
                    except Exception:  # closing must go on; the hook's work expires anyway
                        log.exception("client close hook %r failed", hook)
        self._closed = True
        loop = asyncio.get_running_loop()
        if _DEFAULTS.get(loop) is self:
            del _DEFAULTS[loop]
        if self._host_task is not None:
            self._host_task.cancel()
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(asyncio.CancelledError):
                    await self._host_task
        if self._api_client is not None:
            with anyio.CancelScope(shield=True):
                # Abort TLS connections instead of the graceful close_notify exchange:
                # nothing awaits that exchange, so it could outlive the event loop and
                # leave half-closed sockets behind (ResourceWarning at garbage collection).
                session = getattr(self._api_client.rest_client, "pool_manager", None)
                connector = getattr(session, "connector", None)
                if connector is not None:
                    await connector.close(abort_ssl=True)
                await self._api_client.close()

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


WATCH_LINGER = 30.0
"""Seconds a selected watch keeps running after its last user left."""

_SelectedKey = tuple[ResourceKind, str, str | None, str | None]


@attrs.define(eq=False)
class _Selected:
    watch: KindWatch
    scope: anyio.CancelScope
    users: int = 0
    idle_since: float = 0.0


def _abort_closed_tls(api_client: Any) -> None:
    """Have aiohttp abort TLS connections it closed, where CPython needs that.

    A request cancelled mid-flight (a renewal when its permit is released, any call when its
    client closes) makes aiohttp close that connection gracefully. Before CPython 3.12.8
    (python/cpython#118960) a TLS transport closed that way may never finish closing: its
    socket stays open until garbage collection (a ResourceWarning, and a file descriptor
    per cancelled request in between). aiohttp's remedy is ``enable_cleanup_closed``, which
    aborts such transports every 2 s and on close; kubernetes_asyncio builds its connector
    without it, so it is switched on here (aiohttp itself refuses it on fixed versions).
    """
    import aiohttp.connector

    if not getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False):
        return
    session = getattr(api_client.rest_client, "pool_manager", None)
    connector = getattr(session, "connector", None)
    if isinstance(connector, aiohttp.connector.BaseConnector) and hasattr(
        connector, "_cleanup_closed_disabled"
    ):
        connector._cleanup_closed_disabled = False
        connector._cleanup_closed()  # starts its periodic abort of closed transports


def _read_environment_once(api_client: Any) -> None:
    """Take the proxy from the environment once, instead of twice per request in threads.

    kubernetes_asyncio's session trusts the environment, so aiohttp looks up the netrc file
    and the proxy variables in worker threads on every request it sends: two thread round
    trips per write, which a busy process pays for in GIL hand-offs too. The proxy
    variables (``HTTPS_PROXY``, ``NO_PROXY``...) are read here, once, for the API server's
    URL; credentials come from the kubeconfig, never from netrc (a proxy's may: they are
    kept).
    """
    import aiohttp
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    rest: Any = getattr(api_client, "rest_client", None)
    session = getattr(rest, "pool_manager", None)
    if not isinstance(session, aiohttp.ClientSession) or not hasattr(session, "_trust_env"):
        return  # not the layout this was written for: leave it as it is
    if rest.proxy is None:
        try:
            proxy, auth = get_env_proxy_for_url(URL(api_client.configuration.host))
        except LookupError:
            pass  # no proxy for this server
        else:
            rest.proxy = str(proxy)
            if auth is not None:
                rest.proxy_headers = {
                    **(rest.proxy_headers or {}),
                    "Proxy-Authorization": auth.encode(),
                }
    session._trust_env = False


def _task_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


_LAZY_PACKAGES = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.models",
)
_LAZY_LOCK = threading.RLock()  # a real __init__ may touch another lazy package


def defer_kubernetes_models() -> bool:
    """Import ``kubernetes_asyncio`` so that its generated API and model classes load only
    when something asks for them; returns whether it did.

    Its package ``__init__`` files import ~830 generated modules (~33 MiB of RSS), while
    the store needs only ``ApiClient``, ``Configuration`` and the config loaders. Here the
    three packages are created without running their ``__init__``: a submodule asked of
    them is imported on its own, and any other name (``client.CoreV1Api``,
    ``models.V1Pod``, ``__version__``) first runs the real ``__init__`` into the same
    module object, so code that uses them gets what a plain import gives, classes
    included. Nothing is done (``False``) if ``kubernetes_asyncio`` is already imported,
    or if its layout is not the expected one (then it is left as it was found).
    """
    if any(name in sys.modules for name in _LAZY_PACKAGES):
        return False
    try:
        for name in _LAZY_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None or spec.submodule_search_locations is None:
                raise ImportError(f"{name} is not a package")
            module = importlib.util.module_from_spec(spec)
            module.__getattr__ = _load_on_demand(module, spec.loader)  # type: ignore[method-assign]
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
        # What kubernetes_asyncio.config takes from its client package, bound as the real
        # __init__ binds them (the same classes).
        from kubernetes_asyncio.client.api_client import ApiClient
        from kubernetes_asyncio.client.configuration import Configuration

        client = sys.modules["kubernetes_asyncio.client"]
        client.ApiClient = ApiClient  # type: ignore[attr-defined]
        client.Configuration = Configuration  # type: ignore[attr-defined]
    except Exception:
        for name in [m for m in sys.modules if m.partition(".")[0] == "kubernetes_asyncio"]:
            del sys.modules[name]
        log.debug("kubernetes_asyncio left to a plain import", exc_info=True)
        return False
    return True


def _load_on_demand(
    module: types.ModuleType, loader: importlib.abc.Loader
) -> Callable[[str], object]:
    """The module ``__getattr__`` (PEP 562) of a package of :func:`defer_kubernetes_models`."""

    def __getattr__(name: str) -> object:
        with _LAZY_LOCK:
            if module.__dict__.get("__getattr__") is __getattr__:  # else loaded meanwhile
                full = f"{module.__name__}.{name}"
                if "." not in name and importlib.util.find_spec(full) is not None:
                    # A submodule: the real __init__ binds the same module under its name.
                    return importlib.import_module(full)
                del module.__getattr__
                loader.exec_module(module)
        return getattr(module, name)

    return __getattr__


def _retry_budget(value: float | None) -> float:
    source = "retry_budget"
    if value is None:
        text = os.environ.get(ENV_RETRY_BUDGET, "").strip()
        if not text:
            return DEFAULT_RETRY_BUDGET
        source = f"${ENV_RETRY_BUDGET}"
        try:
            value = float(text)
        except ValueError:
            value = math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(
            f"{source} must be a number of seconds >= 0 (inf: retry forever), got {value!r}"
        )
    return float(value)


def _config_problem(path: str, context: str | None, exc: Exception) -> str:
    """A kubeconfig loading failure in words (kubernetes_asyncio's are terse)."""
    if context is not None:
        names = _context_names(path)
        if names is not None and context not in names:
            known = ", ".join(names) or "none"
            return f"kubeconfig {path!r} has no context {context!r} (its contexts: {known})"
    detail = str(exc).strip() or type(exc).__name__
    return f"kubeconfig {path!r}: {detail}"


def _context_names(path: str) -> list[str] | None:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    contexts = doc.get("contexts") if isinstance(doc, dict) else None
    return [str(c.get("name")) for c in contexts or () if isinstance(c, dict)]


def _pick_namespace(identity: Identity, context_ns: str | None) -> str:
    if identity.pod is not None and identity.pod.namespace:
        return identity.pod.namespace
    if SERVICE_ACCOUNT_NAMESPACE_FILE.exists():
        return str(SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip())
    return context_ns or "default"


_DEFAULTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = (
    weakref.WeakKeyDictionary()
)


def default_client() -> Client:
    """The process's client for the running event loop, configured from the environment."""
    loop = asyncio.get_running_loop()
    client = _DEFAULTS.get(loop)
    if client is None or client._closed:
        client = _DEFAULTS[loop] = Client()
    return client


# Public as ``konductor_sdk.Client`` / ``konductor_sdk.default_client`` (reprs, tracebacks).
Client.__module__ = default_client.__module__ = "konductor_sdk"
