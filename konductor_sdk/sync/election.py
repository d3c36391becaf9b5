"""Blocking twins of :mod:`konductor_sdk.election` (generated, do not edit).

Leader election shaped like client-go's ``tools/leaderelection``.

::

    config = ElectionConfig("scheduler", lease_duration=15, renew_deadline=10, retry_period=2)

    async def lead(token: int) -> None:
        serve(fencing_token=token)            # cancelled when leadership is lost

    elector = LeaderElector(config, on_started_leading=lead, on_stopped_leading=flush)
    elector.run()                             # campaigns, leads, campaigns again...

Two backends share one state machine: ``"konductor"`` (our ``sync.konductor.io`` Lease, with
fencing tokens, priority handoff and every candidate a ``Claim`` visible in ``kubectl get``) and
``"coordination"`` (the built-in ``coordination.k8s.io/v1`` Lease with client-go's record
semantics, so Python and Go replicas can share one election). Guarantees: ``docs/lease.md``.

Written from the public async API by ``python -m konductor_sdk.sync._generate``; how
the blocking calls behave: :mod:`konductor_sdk.sync`.
"""

from __future__ import annotations

from typing import final

from konductor_sdk import FencingToken
from konductor_sdk.election import ElectionConfig as ElectionConfig
from konductor_sdk.election import ElectorStatistics as ElectorStatistics

from . import _elector, _portal
from ._elector import Term as Term

__all__ = [
    "ElectionConfig",
    "ElectorStatistics",
    "LeaderElector",
    "Term",
]


@final
class LeaderElector(_elector.BlockingElector):
    """Blocking twin of :class:`konductor_sdk.election.LeaderElector`.

    Args:
        config: see :class:`~konductor_sdk.election.ElectionConfig`.
        client: default: the blocking side's default client.
        on_started_leading: ``fn(term)``, run in a worker thread for each term; may block
            for the whole term, but must return soon after ``term.stopped`` is set. If it
            raises, the lease is released and :meth:`run` re-raises.
        on_stopped_leading: ``fn()``, in a worker thread, after every term (and once if
            never leading).
        on_new_leader: ``fn(identity)``, in a worker thread, when the observed leader
            changes.
    """

    @property
    def config(self) -> ElectionConfig:
        return self._async.config

    @property
    def is_leader(self) -> bool:
        """True while a term is running and its lease is not lost. Read from the clock on
        access: false the instant the term's deadline passes (a leader frozen past its
        lease sees ``False`` on its first look after it resumes), not when a background
        task notices.
        """
        return self._async.is_leader

    @property
    def leader(self) -> str | None:
        """The leader's identity as last observed, or ``None`` if nobody leads."""
        return self._async.leader

    @property
    def token(self) -> int | None:
        """The fencing token of the current term, or ``None`` when not leading."""
        return self._async.token

    @property
    def fencing(self) -> FencingToken | None:
        """The current term's token for :class:`konductor_sdk.Fence`, or ``None`` when not
        leading.
        """
        return self._async.fencing

    def statistics(self) -> ElectorStatistics:
        """A snapshot of this elector (no I/O)."""
        return _portal.call(self._async.statistics)
