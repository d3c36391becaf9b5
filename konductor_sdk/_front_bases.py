"""What the primitives' front classes share: naming, connecting and the admin methods.

* :class:`ObjectFront`: :class:`~konductor_sdk.Once` and :class:`~konductor_sdk.WaitGroup`,
  one object of one kind reached through a client; ``_connect``/``_read``/``delete``.

(The semaphore family's lock front is :mod:`konductor_sdk._lock_front`.)
"""

from __future__ import annotations

from typing import ClassVar

from konductor_sdk._kernel.cas import read
from konductor_sdk._kernel.client import Client, default_client
from konductor_sdk._kernel.errors import NotFoundError
from konductor_sdk._kernel.names import check_object_name
from konductor_sdk._kernel.objects import KObject, ResourceKind

__all__ = ["ObjectFront"]


class ObjectFront:
    """One named object of :attr:`KIND`, in the client's namespace unless told otherwise.

    Args:
        name: the object's name.
        namespace: default: the client's.
        client: default: :func:`~konductor_sdk.default_client`.

    Raises:
        ConfigurationError: a bad name.
    """

    KIND: ClassVar[ResourceKind]

    def __init__(self, name: str, *, namespace: str | None, client: Client | None) -> None:
        self.name = check_object_name(name)
        if namespace is not None:
            check_object_name(namespace, field="namespace")
        self._namespace = namespace
        self._client = client

    async def _connect(self) -> tuple[Client, str]:
        if self._client is None:
            self._client = default_client()
        client = await self._client.connect()
        if self._namespace is None:
            self._namespace = client.namespace
        return client, self._namespace

    async def _read(self) -> KObject:
        """The object as the server (or the watch cache) has it now."""
        client, ns = await self._connect()
        return await read(client, self.KIND, ns, self.name)

    async def delete(self) -> bool:
        """Delete the object; ``False`` if it did not exist."""
        client, ns = await self._connect()
        try:
            await client.store.delete(self.KIND, ns, self.name)
        except NotFoundError:
            return False
        return True
