import pytest

from konductor_sdk._kernel.objects import COORDINATION_LEASE, NAMESPACE, POD, SEMAPHORE, KObject


@pytest.mark.parametrize(
    ("args", "path"),
    [
        ((SEMAPHORE, "ns", "gpu"), "/apis/sync.konductor.io/v1alpha1/namespaces/ns/semaphores/gpu"),
        ((SEMAPHORE, None, None), "/apis/sync.konductor.io/v1alpha1/semaphores"),
        ((POD, "ns", "p"), "/api/v1/namespaces/ns/pods/p"),
        ((NAMESPACE, "ignored", "x"), "/api/v1/namespaces/x"),
        (
            (COORDINATION_LEASE, "kube-system", "l"),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
        ),
    ],
)
def test_paths(args: tuple, path: str) -> None:  # type: ignore[type-arg]
    assert args[0].path(args[1], args[2]) == path


def test_status_subresource_path() -> None:
    assert SEMAPHORE.path("n", "s", "status").endswith("/semaphores/s/status")


def test_kobject_views_tolerate_missing_fields() -> None:
    obj = KObject({"metadata": {"name": "a", "resourceVersion": "7"}})
    assert (obj.name, obj.resource_version, obj.generation) == ("a", "7", 0)
    assert obj.spec == {}
    assert obj.status == {}
    body = obj.with_status({"x": 1})
    assert body["status"] == {"x": 1}
    assert body["metadata"]["resourceVersion"] == "7"
    assert obj.status == {}  # the view itself is unchanged
