"""What the doc tests do with each block: the rules of ``tests/docs/README.md`` as code.

:func:`classify` decides, for one block, which kind of check it gets, and raises
:class:`~_markdown.MarkdownError` when a block breaks a rule (an untagged block that is not
marked as output, a console block without commands, a stand-in that matches nothing...).
It does no I/O but reading the repository, so the rules are checked for every document
without a cluster (``test_docs.py::test_blocks_follow_the_rules``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from _markdown import PYTHON, SHELL, TEXT, YAML, Block, MarkdownError

REPO = Path(__file__).resolve().parents[2]

Kind = Literal["python", "shell", "pytest", "data", "text", "include", "skip"]

DEFAULT_TIMEOUT = {"python": 30.0, "shell": 60.0, "pytest": 120.0}


@dataclass(frozen=True)
class Command:
    """One command of a shell block: as documented, and what the suite runs for it."""

    line: int
    documented: str  # continuation lines joined with spaces
    output: tuple[str, ...]  # the documented output lines that follow it
    run: str | None  # None: not run here (covered by another test)
    covered_by: str | None = None
    until: str | None = None  # interrupt it (SIGINT) once its output shows this
    exit: int = 0  # the exit status it must end with


def normalize(command: str) -> str:
    return " ".join(command.replace("\\\n", " ").split())


def _logical_lines(block: Block) -> list[tuple[int, str, bool]]:
    """(line, text, is_prompted) for each command line, continuations joined; output lines
    come back as (line, text, False) when the block uses ``$`` prompts."""
    raw = block.text.splitlines()
    prompted = any(line.startswith("$ ") for line in raw)
    out: list[tuple[int, str, bool]] = []
    index = 0
    while index < len(raw):
        line = raw[index]
        number = block.first_line + index
        if prompted and not line.startswith("$ "):
            out.append((number, line, False))
            index += 1
            continue
        text = line[2:] if prompted else line
        while text.endswith("\\") and index + 1 < len(raw):
            index += 1
            text = text + "\n" + raw[index]
        index += 1
        if text.strip() and not text.lstrip().startswith("#"):
            out.append((number, text, True))
    return out


def apply_replacements(block: Block, text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with the block's ``replace`` directives applied; with ``env``, ``$VARS`` in
    the new text are expanded (for Python and YAML; a shell expands them itself)."""
    for directive in block.all("replace"):
        new = directive.args["new"]
        if env is not None:
            new = string.Template(new).safe_substitute(env)
        text = text.replace(directive.args["old"], new)
    return text


def commands(block: Block) -> list[Command]:
    """The block's commands with their documented output, stand-ins and coverage applied."""
    parsed: list[tuple[int, str, list[str]]] = []
    for number, text, is_command in _logical_lines(block):
        if is_command:
            parsed.append((number, text, []))
        elif parsed:
            parsed[-1][2].append(text)
        elif text.strip():
            raise MarkdownError(f"{block.path}:{number}: output before the first `$ ` command")
    if not parsed:
        raise MarkdownError(f"{block.where}: a {block.lang} block without a command")
    substitutes = block.all("stand-in") + block.all("covered-by")
    used: set[int] = set()
    result = []
    for number, text, output in parsed:
        documented = normalize(text)
        matching = [d for d in substitutes if documented.startswith(normalize(d.args["for"]))]
        if len(matching) > 1:
            raise MarkdownError(f"{block.path}:{number}: more than one stand-in/covered-by")
        if not matching:
            run: str | None = apply_replacements(block, text)
            covered = None
        elif matching[0].name == "stand-in":
            used.add(id(matching[0]))
            run, covered = matching[0].args["run"], None
        else:
            used.add(id(matching[0]))
            run, covered = None, matching[0].args["test"]
            check_covered_by(block, covered, matching[0].args["for"])
        result.append(Command(number, documented, tuple(output), run, covered))
    for name in ("until", "exit"):
        directive = block.get(name)
        if directive is None:
            continue
        prefix = normalize(directive.args.get("for", ""))
        chosen = [c for c in result if c.documented.startswith(prefix)] if prefix else result[-1:]
        if len(chosen) != 1:
            raise MarkdownError(f"{block.path}:{directive.line}: {name} must select one command")
        index = result.index(chosen[0])
        value = directive.args["text"] if name == "until" else int(directive.args["code"])
        result[index] = replace(result[index], **{name: value})
    for directive in substitutes:
        if id(directive) not in used:
            raise MarkdownError(
                f"{block.path}:{directive.line}: {directive.name} for={directive.args['for']!r} "
                "matches no command of the block"
            )
    return result


def check_covered_by(block: Block, test: str, command: str) -> None:
    path = REPO / test
    if not (test.startswith("tests/") and path.is_file()):
        raise MarkdownError(f"{block.where}: covered-by: no test file {test}")
    if normalize(command) not in normalize(path.read_text()):
        raise MarkdownError(f"{block.where}: covered-by: {test} does not mention {command!r}")


def classify(block: Block) -> Kind:
    """Which check ``block`` gets; raises MarkdownError if it breaks a rule."""
    if block.get("skip") is not None:
        if not block.get("skip").args["reason"].strip():  # type: ignore[union-attr]
            raise MarkdownError(f"{block.where}: skip needs a reason")
        return "skip"
    lang = block.lang
    if block.includes:
        for included in block.includes:
            if not (REPO / included).is_file():
                raise MarkdownError(f"{block.where}: includes a missing file {included}")
        return "include"
    if lang in PYTHON:
        return "pytest" if block.get("pytest") is not None else "python"
    if lang in SHELL:
        commands(block)
        return "shell"
    if lang in YAML or lang in ("json", "toml"):
        return "data"
    if lang in TEXT:
        if block.get("output") is None and block.get("figure") is None:
            raise MarkdownError(
                f"{block.where}: an untagged/text block must be marked as command output "
                "(<!-- doctest: output -->) or a figure; commands go in ```console blocks"
            )
        return "text"
    raise MarkdownError(
        f"{block.where}: no check for a {lang!r} block: include it from a tested file "
        "or skip it with a reason"
    )


def timeout(block: Block, kind: str) -> float:
    directive = block.get("timeout")
    if directive is not None:
        return float(directive.args["seconds"])
    return DEFAULT_TIMEOUT.get(kind, 60.0)


def output_pattern(line: str, ignore: str | None = None) -> re.Pattern[str]:
    """A documented output line as a pattern: ``…`` (or ``...``) and whatever ``ignore``
    matches stand for any text, runs of spaces for any whitespace (tables are aligned for
    the values shown)."""
    line = line.strip()
    if ignore:
        line = re.sub(ignore, "…", line)
    parts = re.split(r"(…|\.\.\.|\s+)", line)
    regex = "".join(
        ".*" if part in ("…", "...") else r"\s+" if part.isspace() else re.escape(part)
        for part in parts
        if part
    )
    return re.compile(regex)


def missing_output(
    documented: tuple[str, ...], actual: str, ignore: str | None = None
) -> list[str]:
    """Documented lines not found, in order, among the actual output's lines."""
    lines = [line.strip() for line in actual.splitlines()]
    position = 0
    missing = []
    for expected in documented:
        if not expected.strip():
            continue
        pattern = output_pattern(expected, ignore)
        for index in range(position, len(lines)):
            if pattern.fullmatch(lines[index]):
                position = index + 1
                break
        else:
            missing.append(expected)
    return missing


def setups(block: Block) -> list[tuple[str, str, int]]:
    """(language, code, line) of the block's setup directives."""
    default = "python" if block.lang in PYTHON else "bash"
    out = []
    for directive in block.all("setup"):
        lang = directive.args.get("lang", default)
        if lang not in ("python", "bash"):
            raise MarkdownError(f"{block.path}:{directive.line}: setup lang must be python|bash")
        out.append((lang, directive.body, directive.line + 1))
    return out
