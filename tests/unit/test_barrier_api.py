"""Bad arguments to Barrier, Stages, Once and WaitGroup are rejected before any request."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from konductor_sdk import Client, ConfigurationError, Identity
from konductor_sdk.barrier import Barrier
from konductor_sdk.once import Once
from konductor_sdk.stages import Stages
from konductor_sdk.waitgroup import WaitGroup


class NoIOStore:
    """A store that fails the test on any request."""

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected store call: {name}")


def no_io_client() -> Client:
    return Client(store=NoIOStore(), namespace="ns", identity=Identity(holder="h"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"expected": 0}, "expected"),
        ({"expected": 4, "quorum": 5}, "quorum"),
        ({"expected": 4, "timeout": -1}, "timeout"),
        ({"expected": 4, "quorum": 2, "last_call": -0.5}, "last_call"),
        ({"expected": 4, "ttl": 0}, "ttl"),
        ({"expected": 4, "ttl": 10**6}, "ttl"),
        ({"expected": 4, "ttl": 2.5}, "ttl"),
        ({"expected": 4, "party": ""}, "party"),
        ({"expected": 4, "party": "p" * 254}, "party"),
        ({"expected": 2**31}, "expected"),
        ({"expected": None, "timeout": 5}, "need expected"),
        ({"expected": 4, "namespace": "Bad_NS"}, "namespace"),
    ],
)
def test_barrier_arguments(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        Barrier("ok", client=no_io_client(), **kwargs)


@pytest.mark.parametrize("name", ["", "Upper", "under_score", "-dash", "a" * 254, 7])
def test_bad_names(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="name"):
        Barrier(name, expected=2, client=no_io_client())
    with pytest.raises(ConfigurationError, match="name"):
        Once(name, client=no_io_client())
    with pytest.raises(ConfigurationError, match="name"):
        WaitGroup(name, client=no_io_client())


@pytest.mark.anyio
async def test_set_expected_is_checked_before_any_request() -> None:
    barrier = Barrier("ok", expected=4, client=no_io_client())
    for bad in (0, -1, 2.0, 2**31, "8"):
        with pytest.raises(ConfigurationError, match="expected"):
            await barrier.set_expected(bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_waitgroup_delta_is_checked_before_any_request() -> None:
    wg = WaitGroup("ok", client=no_io_client())
    for bad in (1.5, "2", None):
        with pytest.raises(ConfigurationError, match="delta"):
            await wg.add(bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_create_without_expected_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="expected"):
        await Barrier("ok", expected=None, client=no_io_client()).create()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((["load", "load"],), "unique"),
        (([],), "non-empty"),
        (("load",), "list"),
        ((["Load"],), "stages"),
        ((["x" * 64],), "stages"),
    ],
)
def test_stage_lists(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        Stages("pipe", *args, parties=2, client=no_io_client())


def test_stage_names_must_make_valid_object_names() -> None:
    with pytest.raises(ConfigurationError, match="stage object name"):
        Stages("pipe", ["Train_1"], parties=2, client=no_io_client())


def test_unknown_stage() -> None:
    stages = Stages("pipe", ["load", "train"], parties=2, client=no_io_client())
    with pytest.raises(ConfigurationError, match="one of"):
        stages.barrier("export")
    assert stages.barrier("train").name == "pipe-train"
    assert stages.stages == ("load", "train")


def test_ten_thousand_parties_are_fine() -> None:
    assert repr(Barrier("big", expected=10_000, namespace="ns", party="r", client=no_io_client()))


def test_once_ttl_is_checked() -> None:
    for bad in (0, -1, 2.5, 10**6, True):
        with pytest.raises(ConfigurationError, match="ttl"):
            Once("ok", client=no_io_client(), ttl=bad)


def test_stages_share_one_party_name() -> None:
    stages = Stages("pipe", ["a", "b"], parties=2, client=no_io_client())
    assert stages.party.startswith("h#")
    assert {stages.barrier(s).party for s in stages.stages} == {stages.party}
    named = Stages("pipe", ["a", "b"], parties=2, party="rank-1", client=no_io_client())
    assert named.barrier("b").party == "rank-1"


def test_reprs_and_statistics() -> None:
    barrier = Barrier("epoch", expected=8, namespace="ns", party="rank-0", client=no_io_client())
    assert repr(barrier) == "<Barrier ns/epoch expected=8 party='rank-0'>"
    stats = barrier.statistics()
    assert (stats.party, stats.generation, stats.opened, stats.writes) == ("rank-0", None, 0, 0)
    assert repr(Once("init", namespace="ns", ttl=10)) == "<Once ns/init ttl=10>"
    assert repr(WaitGroup("wg", namespace="ns")) == "<WaitGroup ns/wg>"
    assert repr(Stages("pipe", ["a", "b"], parties=2)) == "<Stages pipe a -> b>"
