"""A schemaless namespaced CRD with a status subresource, for tests of the SDK core that
need a custom resource but none of the primitives' schemas."""

from __future__ import annotations

import textwrap
from pathlib import Path

from konductor_sdk._kernel.objects import ResourceKind
from konductor_sdk.testing import ClusterHandle


def install_scratch_crd(control_plane: ClusterHandle, directory: Path, kind: ResourceKind) -> None:
    """Install ``kind`` (group, version, plural, Kind) as a CRD that accepts any spec/status."""
    singular = kind.kind.lower()
    (directory / f"{kind.plural}.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata: {{name: {kind.plural}.{kind.group}}}
            spec:
              group: {kind.group}
              scope: Namespaced
              names: {{plural: {kind.plural}, singular: {singular}, kind: {kind.kind}}}
              versions:
                - name: {kind.version}
                  served: true
                  storage: true
                  subresources: {{status: {{}}}}
                  schema:
                    openAPIV3Schema:
                      type: object
                      properties:
                        spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
                        status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
            """
        )
    )
    control_plane.install_crds(directory)
