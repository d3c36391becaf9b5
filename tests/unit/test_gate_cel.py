"""CEL for Gate object conditions: a real CEL implementation, errors reported not raised,
and bounded cost (an overrunning evaluation is killed; the next one gets a new worker)."""

from __future__ import annotations

import pytest

from konductor_sdk import ConfigurationError
from konductor_sdk._kernel.cel_eval import MAX_OBJECT_BYTES, CelEvaluator, check_expression

pytestmark = pytest.mark.anyio
DEPLOYMENT = {"status": {"availableReplicas": 3}, "spec": {"replicas": 3}}


async def test_values_and_reported_errors() -> None:
    async with CelEvaluator() as cel:
        ok = await cel.evaluate("object.status.availableReplicas >= 3", DEPLOYMENT)
        assert (ok.value, ok.error) == (True, None)
        no = await cel.evaluate("object.spec.replicas > 3", DEPLOYMENT)
        assert (no.value, no.error) == (False, None)
        cases = {
            "object.status.ready": "no such key: ready",
            "object.spec.replicas": "must evaluate to a bool, got int",
            "object.spec.replicas +": "invalid CEL",
            "object.spec.replicas / 0 == 1": "evaluation error",
        }
        for expression, text in cases.items():
            outcome = await cel.evaluate(expression, DEPLOYMENT)
            assert outcome.value is None
            assert text in str(outcome.error), (expression, outcome)
        big = await cel.evaluate("true", {"blob": "x" * (MAX_OBJECT_BYTES + 1)})
        assert big.error is not None
        assert "larger than" in big.error
        assert cel.restarts == 1  # errors are answers, not crashes


async def test_an_expensive_expression_is_killed_and_the_worker_replaced() -> None:
    cube = (
        "object.l.map(a, object.l.map(b, object.l.map(c, a + b + c).filter(x, x > 5).size())"
        ".filter(y, y > 0).size()).size() > 0"
    )
    async with CelEvaluator(timeout=0.5) as cel:
        slow = await cel.evaluate(cube, {"l": list(range(400))})
        assert slow.error == "evaluation took longer than 0.5s"
        after = await cel.evaluate("object.x == 1", {"x": 1})
        assert after.value is True
        assert cel.restarts == 2


def test_check_expression() -> None:
    check_expression("object.a == 1")
    with pytest.raises(ConfigurationError, match="not valid CEL"):
        check_expression("object.a ==")
    with pytest.raises(ConfigurationError, match=r"1\.\.1024"):
        check_expression("x" * 1025)
    with pytest.raises(ConfigurationError, match="not valid CEL"):
        check_expression("(" * 500 + "1" + ")" * 500)  # the parser bounds nesting
