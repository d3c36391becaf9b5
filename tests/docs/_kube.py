"""YAML blocks against the API server and the CRD schemas.

* :func:`dry_run` sends a manifest as a server-side apply with ``dryRun=All`` and
  ``fieldValidation=Strict``: schema, CEL rules and admission policies all run, unknown or
  duplicated fields are errors, nothing is stored. Namespaced objects go to the document's
  namespace, whatever namespace the example names.
* :func:`unknown_fields` checks the field names of a fragment (a status layout as ``kubectl
  get -o yaml`` shows it) against the CRD schema of ``crds/``, the schema's source of truth.
"""

from __future__ import annotations

import copy
import http.client
import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from konductor_sdk.testing._kubeconfig import read_kubeconfig
from konductor_sdk.testing._rest import _ssl_context

REPO = Path(__file__).resolve().parents[2]
FIELD_MANAGER = "konductor-doctest"


class Api:
    """A minimal JSON client for one kubeconfig (the standard library, like ``_rest``)."""

    def __init__(self, kubeconfig: Path) -> None:
        access = read_kubeconfig(kubeconfig)
        url = urlsplit(access.server)
        assert url.hostname is not None
        self._host, self._port = url.hostname, url.port or 443
        self._context = _ssl_context(access)
        self._resources: dict[str, list[dict[str, Any]]] = {}

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        connection = http.client.HTTPSConnection(
            self._host, self._port, timeout=30, context=self._context
        )
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            payload = None if body is None else json.dumps(body).encode()
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read().decode()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """The collection path prefix and plural of ``kind``, and whether it is namespaced."""
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if prefix not in self._resources:
            status, answer = self.request("GET", prefix)
            if status != 200:
                raise AssertionError(f"{api_version} is not served ({status}): {answer}")
            self._resources[prefix] = answer["resources"]
        for resource in self._resources[prefix]:
            if resource["kind"] == kind and "/" not in resource["name"]:
                return f"{prefix}/{resource['name']}", bool(resource["namespaced"])
        raise AssertionError(f"{api_version} has no kind {kind}")


def dry_run(api: Api, manifest: dict[str, Any], namespace: str) -> None:
    """Server-side apply ``manifest`` with ``dryRun=All``; raise with the server's answer."""
    manifest = copy.deepcopy(manifest)
    collection, namespaced = api.resource(manifest["apiVersion"], manifest["kind"])
    metadata = manifest.setdefault("metadata", {})
    name = metadata.get("name")
    if not name:
        raise AssertionError(f"{manifest['kind']}: a manifest needs metadata.name")
    if namespaced:
        metadata["namespace"] = namespace
        prefix, plural = collection.rsplit("/", 1)
        collection = f"{prefix}/namespaces/{namespace}/{plural}"
    query = f"dryRun=All&fieldValidation=Strict&fieldManager={FIELD_MANAGER}&force=true"
    status, answer = api.request(
        "PATCH",
        f"{collection}/{name}?{query}",
        manifest,
        content_type="application/apply-patch+yaml",
    )
    if not 200 <= status < 300:
        message = answer.get("message", answer) if isinstance(answer, dict) else answer
        raise AssertionError(f"{manifest['kind']} {name}: HTTP {status}: {message}")


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of ``kind`` (a Konductor kind) from ``crds/``."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
            schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD of kind {kind} in crds/")


def konductor_kinds() -> set[str]:
    return {
        yaml.safe_load(p.read_text())["spec"]["names"]["kind"]
        for p in (REPO / "crds").glob("*.yaml")
    }


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Field names in ``value`` that ``schema`` does not declare (values are not checked:
    layouts show ``…`` placeholders)."""
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        found = []
        for key, item in value.items():
            if path == "" and key == "metadata":
                continue  # ObjectMeta is not in a CRD's schema; the dry run checks it
            if properties is not None and key in properties:
                found += unknown_fields(item, properties[key], f"{path}.{key}")
            elif isinstance(additional, dict):
                found += unknown_fields(item, additional, f"{path}[{key}]")
            elif additional is not True and not preserve:
                found.append(f"{path}.{key}".lstrip("."))
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            field
            for index, item in enumerate(value)
            for field in unknown_fields(item, schema["items"], f"{path}[{index}]")
        ]
    return []
