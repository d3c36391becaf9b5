"""mkdocs hooks: links from the docs to files under ``examples/`` point, in the site, at
the same file included on the Examples page (on GitHub they still open the file itself)."""

from __future__ import annotations

import re
from typing import Any

_LINK = re.compile(r"\]\(\.\./(examples/[^)#\s]*)\)")


def anchor(path: str) -> str:
    """The id of a file's section on the Examples page (``examples/k8s/rbac.yaml`` ->
    ``examples-k8s-rbac-yaml``; a directory -> its first file's section's prefix)."""
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return _LINK.sub(lambda m: f"](examples.md#{anchor(m.group(1))})", markdown)
