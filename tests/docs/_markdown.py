"""Extract fenced code blocks, and the ``doctest`` directives that annotate them, from Markdown.

No Markdown library: the suite needs exactly CommonMark's fence rules (a line of three or
more backticks or tildes, indented by at most three spaces plus the indentation of an
enclosing list item, closed by a fence of the same character at least as long) and HTML
comments, which are never rendered. The directive set itself is documented in
``tests/docs/README.md``; :data:`DIRECTIVES` is its machine-readable form.

A directive is an HTML comment starting with ``doctest:``::

    <!-- doctest: NAME key=value key="a value" flag -->
    <!-- doctest: setup
    async def train(fencing_token): ...
    -->

Arguments on the first line are split like a shell would (``shlex``); for the directives
that take one (``setup``), the lines after the first are the body. A block directive
applies to the next fenced block, which must follow with nothing but blank lines or other
directives in between; a document directive may appear anywhere.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "DIRECTIVES",
    "Block",
    "Directive",
    "DirectiveSpec",
    "Document",
    "MarkdownError",
    "parse",
    "parse_file",
]


class MarkdownError(ValueError):
    """A document breaks the rules of the doc tests (named with its file and line)."""


@dataclass(frozen=True)
class DirectiveSpec:
    """What a directive accepts: its arguments, whether it has a body, where it goes."""

    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    body: bool = False
    document: bool = False
    repeatable: bool = False
    languages: frozenset[str] | None = None  # None: any block


SHELL: Final = frozenset({"console", "bash", "sh", "shell"})
PYTHON: Final = frozenset({"python", "py"})
YAML: Final = frozenset({"yaml", "yml"})
TEXT: Final = frozenset({"text", "", "plain", "txt"})

DIRECTIVES: Final[Mapping[str, DirectiveSpec]] = {
    # Document directives.
    "operator": DirectiveSpec(optional=frozenset({"args"}), document=True),
    # Block directives.
    "setup": DirectiveSpec(optional=frozenset({"lang"}), body=True, repeatable=True),
    "skip": DirectiveSpec(required=frozenset({"reason"})),
    "known-bug": DirectiveSpec(required=frozenset({"reason"}), optional=frozenset({"match"})),
    "timeout": DirectiveSpec(required=frozenset({"seconds"})),
    "pytest": DirectiveSpec(languages=PYTHON),
    "replace": DirectiveSpec(required=frozenset({"old", "new"}), repeatable=True),
    "stand-in": DirectiveSpec(required=frozenset({"for", "run"}), repeatable=True, languages=SHELL),
    "covered-by": DirectiveSpec(
        required=frozenset({"for", "test"}), repeatable=True, languages=SHELL
    ),
    "until": DirectiveSpec(
        required=frozenset({"text"}), optional=frozenset({"for"}), languages=SHELL
    ),
    "exit": DirectiveSpec(
        required=frozenset({"code"}), optional=frozenset({"for"}), languages=SHELL
    ),
    "expect-output": DirectiveSpec(optional=frozenset({"ignore"}), languages=SHELL),
    "schema": DirectiveSpec(required=frozenset({"kind"}), languages=YAML),
    "output": DirectiveSpec(languages=TEXT),
    "figure": DirectiveSpec(languages=TEXT),
}

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doctest:(?P<rest>.*)$")
_SNIPPET = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')


@dataclass(frozen=True)
class Directive:
    name: str
    args: Mapping[str, str]
    body: str
    line: int

    @property
    def spec(self) -> DirectiveSpec:
        return DIRECTIVES[self.name]


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its directives."""

    path: str  # relative to the repository, as it appears in test ids and tracebacks
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    directives: tuple[Directive, ...] = ()

    @property
    def lang(self) -> str:
        word = self.info.split(None, 1)[0] if self.info.strip() else ""
        return word.lstrip("{.").rstrip("}").lower()

    @property
    def first_line(self) -> int:
        """The Markdown line of the block's first content line."""
        return self.line + 1

    @property
    def includes(self) -> tuple[str, ...]:
        """Paths of a block that only includes files (pymdownx.snippets' ``--8<--``)."""
        lines = [line for line in self.text.splitlines() if line.strip()]
        matches = [_SNIPPET.match(line) for line in lines]
        if lines and all(matches):
            return tuple(m.group("path") for m in matches if m)
        return ()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def get(self, name: str) -> Directive | None:
        found = [d for d in self.directives if d.name == name]
        return found[0] if found else None

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.directives if d.name == name]


@dataclass(frozen=True)
class Document:
    path: str
    blocks: tuple[Block, ...]
    directives: tuple[Directive, ...] = field(default=())

    def get(self, name: str) -> Directive | None:
        found = [d for d in self.directives if d.name == name]
        return found[0] if found else None


def _parse_directive(path: str, number: int, lines: list[str]) -> Directive:
    first = _DIRECTIVE.match(lines[0])
    assert first is not None
    texts = [first.group("rest"), *lines[1:]]
    if "-->" not in texts[-1]:
        raise MarkdownError(f"{path}:{number}: the directive is never closed with '-->'")
    texts[-1], tail = texts[-1].split("-->", 1)
    if tail.strip():
        raise MarkdownError(f"{path}:{number}: text after the end of a directive")
    words = texts[0].split()
    if not words:
        raise MarkdownError(f"{path}:{number}: a directive starts with its name")
    name = words[0]
    spec = DIRECTIVES.get(name)
    if spec is None:
        known = ", ".join(sorted(DIRECTIVES))
        raise MarkdownError(f"{path}:{number}: unknown directive {name!r} (known: {known})")
    # A directive with a body has its arguments on the first line; any other may spread
    # its arguments over several lines.
    head, body = (texts[0], "\n".join(texts[1:])) if spec.body else (" ".join(texts), "")
    try:
        _, *arguments = shlex.split(head)
    except ValueError as error:
        raise MarkdownError(f"{path}:{number}: cannot split the directive: {error}") from None
    args: dict[str, str] = {}
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if not equals:
            raise MarkdownError(f"{path}:{number}: {name}: expected key=value, got {argument!r}")
        if key in args:
            raise MarkdownError(f"{path}:{number}: {name}: {key} given twice")
        args[key] = value
    unknown = set(args) - spec.required - spec.optional
    missing = spec.required - set(args)
    if unknown or missing:
        raise MarkdownError(
            f"{path}:{number}: {name}: unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    return Directive(name, args, _dedent(body), number)


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip("\n") + ("\n" if text.strip() else "")


def _comment_lines(lines: list[str], start: int) -> int:
    """Index just past the HTML comment that opens on ``lines[start]``."""
    for index in range(start, len(lines)):
        if "-->" in lines[index]:
            return index + 1
    return len(lines)


def _blocks(path: str, lines: list[str]) -> Iterator[Block | Directive]:
    pending: list[Directive] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        if _DIRECTIVE.match(line):
            end = _comment_lines(lines, index)
            directive = _parse_directive(path, number, lines[index:end])
            if directive.spec.document:
                yield directive
            else:
                pending.append(directive)
            index = end
            continue
        if line.lstrip().startswith("<!--"):  # any other comment: not rendered, skipped
            index = _comment_lines(lines, index)
            continue
        fence = _FENCE.match(line)
        if fence:
            indent = len(fence.group("indent"))
            marker = fence.group("fence")
            info = fence.group("info").strip()
            if marker[0] == "`" and "`" in info:
                fence = None  # an inline code span, not a fence
        if fence:
            body: list[str] = []
            index += 1
            while index < len(lines):
                closing = _FENCE.match(lines[index])
                if (
                    closing
                    and closing.group("fence")[0] == marker[0]
                    and len(closing.group("fence")) >= len(marker)
                    and not closing.group("info").strip()
                ):
                    break
                raw = lines[index]
                strip = min(indent, len(raw) - len(raw.lstrip(" ")))
                body.append(raw[strip:])
                index += 1
            else:
                raise MarkdownError(f"{path}:{number}: the block opened here is never closed")
            text = "\n".join(body) + ("\n" if body else "")
            yield Block(path, number, info, text, tuple(pending))
            pending = []
            index += 1
            continue
        if line.strip() and pending:
            names = ", ".join(d.name for d in pending)
            raise MarkdownError(
                f"{path}:{pending[0].line}: directive(s) {names} not followed by a code block"
            )
        index += 1
    if pending:
        raise MarkdownError(f"{path}:{pending[0].line}: directive at the end of the document")


def _check(block: Block) -> None:
    seen: set[str] = set()
    for directive in block.directives:
        spec = directive.spec
        if directive.name in seen and not spec.repeatable:
            raise MarkdownError(f"{block.path}:{directive.line}: {directive.name} given twice")
        seen.add(directive.name)
        if spec.languages is not None and block.lang not in spec.languages:
            raise MarkdownError(
                f"{block.path}:{directive.line}: {directive.name} does not apply to a "
                f"{block.lang or 'untagged'} block"
            )


def parse(path: str, text: str) -> Document:
    """Every fenced block of ``text`` with its directives, and the document's directives.

    Raises:
        MarkdownError: a directive is malformed, unknown, misplaced, or a block is unclosed.
    """
    blocks: list[Block] = []
    document: list[Directive] = []
    for item in _blocks(path, text.splitlines()):
        if isinstance(item, Directive):
            if any(d.name == item.name for d in document):
                raise MarkdownError(f"{path}:{item.line}: {item.name} given twice")
            document.append(item)
        else:
            _check(item)
            blocks.append(item)
    return Document(path, tuple(blocks), tuple(document))


def parse_file(root: Path, relative: str) -> Document:
    return parse(relative, (root / relative).read_text())
