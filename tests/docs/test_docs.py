"""Every code block and command of README.md and docs/ runs against the test control plane.

The blocks are extracted from the Markdown itself (``_markdown.py``), so a document cannot
drift from the code: what a reader copies is what runs here. The rules, and the directives
that annotate a block when it needs them, are in ``tests/docs/README.md``.

* ``test_document``: one per document with Python or shell blocks. They run in document
  order in one environment (``_runner.DocEnvironment``: a fresh namespace, the admin
  kubeconfig); the Python blocks in one kernel process, like a notebook (``_kernel.py``).
  Blocks marked ``pytest`` are test modules: pytest runs them meanwhile, in the background.
* ``test_data_block``: one per YAML/JSON/TOML/output block: parsed, manifests dry-run on
  the server, status layouts checked against the CRD schema.
* ``test_blocks_follow_the_rules``, ``test_plain_skips_are_the_known_few``: without a
  cluster, every block has a check and nobody skips one silently.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _kube import Api, crd_schema, dry_run, konductor_kinds, unknown_fields
from _markdown import PYTHON, Block, Document, MarkdownError, parse_file
from _plan import (
    apply_replacements,
    classify,
    commands,
    missing_output,
    normalize,
    setups,
    timeout,
)
from _runner import LEAKS, DocEnvironment, Kernel, clean_environment, operator, run_command

from konductor_sdk.testing import ClusterHandle

REPO = Path(__file__).resolve().parents[2]

# Documents other engineers are rewriting right now (issue 14): collected, not run. The lead
# removes an entry once that rewrite is merged and its blocks pass.
PENDING = {}

# Every block that is not checked at all, with its reason. Blocks that cannot run here get a
# stand-in or a covered-by directive instead; this list is for the rest, and stays short.
PLAIN_SKIPS = {
    ("docs/operator.md", "builds an image: there is no Docker engine where the tests run"),
}


def _documents() -> list[str]:
    found = ["README.md", *(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]
    return sorted(found)


DOCUMENTS = _documents()


def _load(path: str) -> Document | MarkdownError:
    try:
        return parse_file(REPO, path)
    except MarkdownError as error:
        return error


def _classify(block: Block) -> str:
    try:
        return classify(block)
    except MarkdownError:
        return "invalid"


def _kinds(path: str) -> set[str]:
    document = _load(path)
    if isinstance(document, MarkdownError):
        return {"invalid"}
    return {_classify(block) for block in document.blocks}


def _data_blocks() -> Iterator[Any]:
    for path in DOCUMENTS:
        document = _load(path)
        if isinstance(document, MarkdownError):
            continue
        for block in document.blocks:
            if _classify(block) in ("data", "text", "include", "skip", "invalid"):
                yield pytest.param(path, block.line, id=block.where)


def _skip_if_pending(path: str) -> None:
    if path in PENDING:
        pytest.skip(PENDING[path])


def _document(path: str) -> Document:
    document = _load(path)
    if isinstance(document, MarkdownError):
        pytest.fail(str(document), pytrace=False)
    return document


def _numbered(block: Block, text: str | None = None) -> str:
    lines = (text if text is not None else block.text).splitlines()
    return "\n".join(f"{block.first_line + i:5} | {line}" for i, line in enumerate(lines))


def _tail(text: str, lines: int = 60) -> str:
    kept = text.strip().splitlines()[-lines:]
    return textwrap.indent("\n".join(kept), "    ") if kept else "    (nothing)"


def _namespace(control_plane: ClusterHandle, path: str) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", Path(path).stem.lower()).strip("-")[:40]
    return control_plane.create_namespace(f"doc-{stem}-{secrets.token_hex(3)}")


def _delete_namespace(control_plane: ClusterHandle, name: str) -> None:
    control_plane.rest().request("DELETE", f"/api/v1/namespaces/{name}")


def _tools(document: Document, directory: Path) -> Path | None:
    """A directory with the programs the document's commands need that are not on PATH
    (``helm``, built from its Go module like the chart tests build it)."""
    shell = [block for block in document.blocks if _classify(block) == "shell"]
    needed = " ".join(
        [command.run or "" for block in shell for command in commands(block)]
        + [code for block in document.blocks for lang, code, _ in setups(block) if lang == "bash"]
    )
    if re.search(r"\bkubectl\b", needed) and shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    if not re.search(r"\bhelm\b", needed):
        return None
    from konductor_sdk.testing._binaries import ensure_helm

    tools = directory / "bin"
    tools.mkdir()
    (tools / "helm").symlink_to(ensure_helm())
    return tools


def _write_pytest_blocks(document: Document, directory: Path) -> None:
    """The document's ``pytest`` blocks as test modules under ``directory``."""
    directory.mkdir(exist_ok=True)
    for block in document.blocks:
        if _classify(block) == "pytest":
            path = directory / f"test_{Path(document.path).stem}_l{block.line}.py"
            path.write_text(block.text)


class _Run:
    """One document's Python and shell blocks, in order, in one environment."""

    def __init__(self, document: Document, environment: DocEnvironment) -> None:
        self.document = document
        self.environment = environment
        self.kernel: Kernel | None = None

    def python(self, block: Block, code: str, line: int, seconds: float) -> str | None:
        if self.kernel is None:
            self.kernel = Kernel(self.environment)
        outcome = self.kernel.run(code, block.path, line, seconds)
        if outcome.ok:
            return None
        return f"{outcome.error.rstrip()}\n  output:\n{_tail(outcome.output)}"

    def bash(self, command: str, seconds: float) -> str | None:
        status, output = run_command(command, self.environment, seconds)
        if status == 0:
            return None
        return f"  $ {command}\n  exit status {status}; output:\n{_tail(output)}"

    def block(self, block: Block, kind: str) -> str | None:
        """Run one block (and its setups); None, or why it failed."""
        seconds = timeout(block, kind)
        for lang, code, line in setups(block):
            if lang == "python":
                failed = self.python(block, code, line, seconds)
            else:
                failed = self.bash(code, seconds)
            if failed:
                return f"{self.document.path}:{line}: the setup of {block.where} failed\n{failed}"
        if kind == "python":
            code = apply_replacements(block, block.text, self.environment.env)
            failed = self.python(block, code, block.first_line, seconds)
            if failed:
                return f"{block.where}: python block failed\n{_numbered(block)}\n{failed}"
            return None
        return self.shell(block, seconds)

    def shell(self, block: Block, seconds: float) -> str | None:
        expect = block.get("expect-output")
        for command in commands(block):
            if command.run is None:
                continue  # covered by command.covered_by (checked when planning)
            status, output = run_command(
                command.run, self.environment, seconds, command.until, command.documented
            )
            where = f"{block.path}:{command.line}"
            shown = f"$ {command.documented}"
            if normalize(command.run) != normalize(apply_replacements(block, command.documented)):
                shown += f"\n  (stand-in: $ {' '.join(command.run.split())})"
            if command.until is not None and command.until not in output:
                return f"{where}: never printed {command.until!r}\n  {shown}\n{_tail(output)}"
            if status != command.exit:
                bound = f"no exit within {seconds:g} s" if status is None else f"exit {status}"
                return f"{where}: {bound}, expected {command.exit}\n  {shown}\n{_tail(output)}"
            if expect is not None:
                missing = missing_output(command.output, output, expect.args.get("ignore"))
                if missing:
                    lines = "\n".join(f"    {line}" for line in missing)
                    return (
                        f"{where}: documented output not shown\n  {shown}\n  missing:\n{lines}\n"
                        f"  actual output:\n{_tail(output)}"
                    )
        return None

    def close(self) -> str | None:
        if self.kernel is None:
            return None
        code, log = self.kernel.close()
        leaks = [line for line in log.splitlines() if any(leak in line for leak in LEAKS)]
        if code != 0:
            return f"{self.document.path}: the kernel exited with {code}:\n{_tail(log)}"
        if leaks:
            return f"{self.document.path}: something leaked:\n{_tail(chr(10).join(leaks))}"
        return None


def _runnable_documents() -> list[str]:
    """The documents with Python or shell blocks, those with the most blocks first (under
    xdist, the longest runs start first)."""
    found = [p for p in DOCUMENTS if _kinds(p) & {"python", "shell", "pytest", "invalid"}]
    return sorted(found, key=lambda path: -document_cost(path))


def document_cost(path: str) -> int:
    document = _load(path)
    if isinstance(document, MarkdownError):
        return 0
    return sum(_classify(b) in ("python", "shell", "pytest") for b in document.blocks)


class _PytestBlocks:
    """A document's ``pytest`` blocks, run by pytest in the background while its other
    blocks run (in one run, in a directory of their own, with a control plane of their
    own, as a reader's project would run them)."""

    def __init__(self, document: Document, directory: Path) -> None:
        self.blocks = [b for b in document.blocks if _classify(b) == "pytest"]
        self.directory = directory
        _write_pytest_blocks(document, directory)
        self.proc: subprocess.Popen[str] | None = None
        if self.blocks:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
                cwd=directory,
                env=clean_environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def result(self) -> str | None:
        """None if they passed, or why not (waits for them, within their time bounds)."""
        if self.proc is None:
            return None
        where = ", ".join(b.where for b in self.blocks)
        try:
            output, _ = self.proc.communicate(
                timeout=sum(timeout(b, "pytest") for b in self.blocks)
            )
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
            return f"{where}: pytest blocks did not finish in time:\n{_tail(output)}"
        if self.proc.returncode != 0 or " passed" not in output:
            return f"{where}: pytest blocks failed (exit {self.proc.returncode}):\n{_tail(output)}"
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.mark.parametrize("path", _runnable_documents())
def test_document(path: str, control_plane: ClusterHandle, tmp_path: Path) -> None:
    _skip_if_pending(path)
    document = _document(path)
    kinds, invalid = [], None
    try:
        kinds = [(block, classify(block)) for block in document.blocks]
    except MarkdownError as error:
        invalid = str(error)
    if invalid:
        pytest.fail(invalid, pytrace=False)
    runnable = [(block, kind) for block, kind in kinds if kind in ("python", "shell")]
    tools = _tools(document, tmp_path)
    namespace = _namespace(control_plane, path)
    environment = DocEnvironment.create(tmp_path, control_plane.kubeconfig_path, namespace, tools)
    pytest_blocks = _PytestBlocks(document, tmp_path / "pytest")
    failures: list[str] = []
    run = _Run(document, environment)
    wanted = document.get("operator")
    try:
        with _operator(environment, wanted.args.get("args", "") if wanted else None):
            for block, kind in runnable:
                started = time.monotonic()
                failed = run.block(block, kind)
                print(f"{block.where}: {kind} block, {time.monotonic() - started:.1f} s")
                known = block.get("known-bug")
                if known is None:
                    if failed:
                        failures.append(failed)
                        break
                    continue
                if failed is None:
                    failures.append(
                        f"{block.where}: passes, but is marked known-bug "
                        f"({known.args['reason']}): remove the directive"
                    )
                elif "match" in known.args and not re.search(known.args["match"], failed):
                    failures.append(f"{block.where}: fails other than the known bug:\n{failed}")
        if not failures and (failed := pytest_blocks.result()):
            failures.append(failed)
    finally:
        pytest_blocks.stop()
        closed = run.close()
        _delete_namespace(control_plane, namespace)
    if closed and not failures:
        failures.append(closed)
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def _operator(
    environment: DocEnvironment, args: str | None
) -> contextlib.AbstractContextManager[object]:
    if args is None:
        return contextlib.nullcontext()
    return operator(environment, shlex.split(args))


@pytest.fixture(scope="session")
def data_namespace(control_plane: ClusterHandle) -> Iterator[str]:
    """One namespace for every dry run of this process (dry runs store nothing)."""
    name = control_plane.create_namespace(f"doc-data-{secrets.token_hex(3)}")
    yield name
    _delete_namespace(control_plane, name)


def _block(path: str, line: int) -> Block:
    (block,) = [b for b in _document(path).blocks if b.line == line]
    return block


def _check_manifests(text: str, block: Block, api: Api, namespace: str) -> None:
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    assert documents, f"{block.where}: an empty YAML block"
    schema = block.get("schema")
    kinds = konductor_kinds()
    for document in documents:
        assert isinstance(document, dict), f"{block.where}: not a YAML mapping"
        kind = document.get("kind")
        if schema is not None:
            assert kind is None, f"{block.where}: a manifest needs no schema directive"
            kind = schema.args["kind"]
            assert kind in kinds, f"{block.where}: schema kind={kind}: not a Konductor kind"
        elif "apiVersion" not in document or kind is None:
            raise AssertionError(
                f"{block.where}: YAML without apiVersion/kind: mark it "
                "<!-- doctest: schema kind=KIND --> if it shows a part of an object"
            )
        if kind in kinds:
            unknown = unknown_fields(document, crd_schema(kind))
            assert not unknown, f"{block.where}: not fields of a {kind}: {unknown}"
        if schema is None:
            dry_run(api, document, namespace)
        elif "spec" in document:  # a layout with a spec: that spec must be valid
            manifest = {
                "apiVersion": "sync.konductor.io/v1alpha1",
                "kind": kind,
                "metadata": {"name": f"doctest-{kind.lower()}"},
                "spec": document["spec"],
            }
            dry_run(api, manifest, namespace)


@pytest.mark.parametrize(("path", "line"), list(_data_blocks()))
def test_data_block(
    path: str, line: int, control_plane: ClusterHandle, data_namespace: str
) -> None:
    """A YAML, JSON or TOML block parses; a manifest passes a server-side dry run; a status
    layout names only fields of its kind's schema; an included file exists."""
    _skip_if_pending(path)
    block = _block(path, line)
    if _classify(block) == "invalid":
        test_blocks_follow_the_rules(path)  # fails, saying which rule
    kind = classify(block)
    if kind == "skip":
        pytest.skip(block.get("skip").args["reason"])  # type: ignore[union-attr]
    if kind == "text":
        return  # output or a figure: shown, not run
    env = {"KONDUCTOR_NAMESPACE": data_namespace}
    texts = (
        [(REPO / p).read_text() for p in block.includes]
        if kind == "include"
        else [apply_replacements(block, block.text, env)]
    )
    failure = None
    try:
        for text in texts:
            _check_data(block, kind, text, control_plane, data_namespace)
    except (AssertionError, ValueError, yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        failure = f"{block.where}: {error}"
    if failure:
        pytest.fail(failure, pytrace=False)


def _check_data(
    block: Block, kind: str, text: str, control_plane: ClusterHandle, namespace: str
) -> None:
    if block.lang in ("yaml", "yml"):
        _check_manifests(text, block, Api(control_plane.kubeconfig_path), namespace)
    elif block.lang == "json":
        json.loads(text)
    elif block.lang == "toml":
        tomllib.loads(text)
    elif kind == "include" and block.lang in PYTHON:
        # tests/docs/test_examples.py runs every examples/*.py (and checks it does).
        assert all(p.startswith("examples/") for p in block.includes), "Python no test runs"
    # Other included files (a Dockerfile) are only required to exist.


@pytest.mark.parametrize("path", DOCUMENTS)
def test_blocks_follow_the_rules(path: str) -> None:
    """No cluster: every block has a check, every directive is known and well placed."""
    _skip_if_pending(path)
    for block in _document(path).blocks:
        try:
            classify(block)
        except MarkdownError as error:
            pytest.fail(str(error), pytrace=False)


def test_plain_skips_are_the_known_few() -> None:
    """Nobody skips a block silently: every ``skip`` directive is listed in PLAIN_SKIPS."""
    found = set()
    for path in DOCUMENTS:
        document = _load(path)
        if isinstance(document, MarkdownError):
            continue
        for block in document.blocks:
            skip = block.get("skip")
            if skip is not None:
                found.add((path, skip.args["reason"]))
    assert found == PLAIN_SKIPS


def test_pending_documents_exist() -> None:
    assert set(PENDING) <= set(DOCUMENTS)
