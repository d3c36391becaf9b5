"""Who is this process? The holder id recorded on every entry a client writes.

In a pod the holder id is ``<pod name>:<pod uid>`` and the entry carries a ``pod``
reference, so the operator can reap the entry as soon as that pod is gone. The pod is
found from the downward-API variables ``POD_NAME``/``POD_UID``/``POD_NAMESPACE`` (see the
docs for the four lines of pod YAML); without them, from what every pod can read: its
hostname (the pod name) and the service-account namespace file. Outside a pod the holder
id is ``<host>:<pid>:<random>``, unique per process.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, final

import attrs

SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@final
@attrs.frozen
class PodRef:
    """The pod a holder runs in. ``uid`` may be empty when it could not be learnt."""

    name: str
    namespace: str
    uid: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"name": self.name, "namespace": self.namespace}
        if self.uid:
            out["uid"] = self.uid
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PodRef | None:
        if not data or not data.get("name"):
            return None
        return cls(str(data["name"]), str(data.get("namespace", "")), str(data.get("uid", "")))


_counter = itertools.count(1)


@final
@attrs.frozen
class Identity:
    """This process's holder id and, in a pod, its :class:`PodRef`."""

    holder: str
    pod: PodRef | None = None

    def entry_fields(self) -> dict[str, Any]:
        """The fields every holder/waiter/arrival entry carries about its owner."""
        fields: dict[str, Any] = {"holder": self.holder}
        if self.pod is not None:
            fields["pod"] = self.pod.to_dict()
        return fields

    def new_key(self) -> str:
        """A key unique to one acquisition by this process (several permits may be held)."""
        return f"{self.holder}#{next(_counter)}{secrets.token_hex(2)}"

    @classmethod
    def for_pod(cls, pod: PodRef) -> Identity:
        holder = f"{pod.name}:{pod.uid}" if pod.uid else pod.name
        return cls(holder=holder, pod=pod)


def detect(environ: Mapping[str, str] | None = None) -> Identity:
    """Work out this process's identity from the environment (no API calls)."""
    env = os.environ if environ is None else environ
    override = env.get("KONDUCTOR_HOLDER_ID")
    pod_name = env.get("POD_NAME")
    pod_ns = env.get("POD_NAMESPACE")
    in_pod = "KUBERNETES_SERVICE_HOST" in env and SERVICE_ACCOUNT_NAMESPACE_FILE.exists()
    if not pod_name and in_pod:
        pod_name = env.get("HOSTNAME") or socket.gethostname()
    if not pod_ns and in_pod:
        pod_ns = SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip()
    if pod_name and pod_ns:
        ident = Identity.for_pod(PodRef(pod_name, pod_ns, env.get("POD_UID", "")))
        return attrs.evolve(ident, holder=override) if override else ident
    holder = override or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    return Identity(holder=holder)
