"""The documentation site, built with ``mkdocs build --strict`` and looked at in headless
Chromium (Debian's package): the DOM Chromium renders has the pages' text (the API
reference generated from docstrings, the examples included from examples/), and a
screenshot shows a styled page (Material's header colour, text), not a blank or unstyled one.

Without ``chromium`` the test is skipped, except in CI (``CI`` set), where it fails:
``.ci/run`` installs it.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
MATERIAL_INDIGO = (0x3F, 0x51, 0xB5)  # the header of Material's default palette


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built from this checkout, served on loopback; yields its base URL."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr[-3000:]
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def browse(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    result = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_pages_show_the_reference_and_the_examples(site: str, tmp_path: Path) -> None:
    home = browse(tmp_path, "--dump-dom", f"{site}/")
    assert "<title>Konductor</title>" in home
    assert "pip install konductor-sdk" in home
    for entry in ("API reference", "Examples", "Operator"):
        assert entry in home, entry
    reference = browse(tmp_path, "--dump-dom", f"{site}/reference/sdk/")
    # Generated from the docstrings: a class heading and its documented arguments.
    assert 'id="konductor_sdk.Semaphore"' in reference
    assert "permits" in reference
    examples = text_of(browse(tmp_path, "--dump-dom", f"{site}/examples/"))
    assert "name: konductor-user" in examples  # examples/k8s/rbac.yaml, included
    assert "async with Semaphore(" in examples or "Semaphore(" in examples  # a .py example
    assert "--8<--" not in examples  # every snippet was resolved


def text_of(dom: str) -> str:
    """The text a reader sees (highlighted code is split into many spans)."""

    class Text(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.skip += tag in ("script", "style")

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("script", "style")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(dom)
    return "".join(parser.parts)


def test_a_screenshot_shows_a_styled_page(site: str, tmp_path: Path) -> None:
    png = Path(os.environ.get("KONDUCTOR_SCREENSHOT_DIR", tmp_path)) / "home.png"
    browse(tmp_path, f"--screenshot={png}", "--window-size=1280,900", f"{site}/")
    width, height, pixels = read_png(png)
    assert (width, height) == (1280, 900)
    colours = {pixel for row in pixels for pixel in row}
    assert len(colours) > 50, "the page is (nearly) blank"
    header = [pixel for row in pixels[5:40] for pixel in row]
    indigo = sum(
        1 for p in header if all(abs(a - b) <= 8 for a, b in zip(p, MATERIAL_INDIGO, strict=True))
    )
    assert indigo > len(header) // 2, "no Material header: the theme's CSS did not load"
    body = [pixel for row in pixels[200:800] for pixel in row[300:1000]]
    dark = sum(1 for p in body if sum(p) < 3 * 128)
    assert dark > len(body) // 200, "no text in the page body"


def read_png(path: Path) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """Decode an 8-bit, non-interlaced RGB(A) PNG (what Chromium writes) to RGB rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8, depth
    assert colour in (2, 6), colour
    assert interlace == 0
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                nearest = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + nearest) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, channels)])  # type: ignore[misc]
        previous = line
    return width, height, rows
