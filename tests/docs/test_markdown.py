"""The block extractor and the rules of the doc tests, without a cluster."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from _markdown import DIRECTIVES, MarkdownError, parse
from _plan import classify, commands, missing_output

README = Path(__file__).with_name("README.md")


def doc(text: str) -> list:  # type: ignore[type-arg]
    return list(parse("x.md", textwrap.dedent(text)).blocks)


def test_fences_lines_and_languages() -> None:
    (python, console, tilde, listed) = doc(
        """\
        Text.

        ```python title="x"
        print(1)
        ```

        ````console
        $ echo '```'
        ````

        ~~~yaml
        a: 1
        ~~~

        1. In a list:

           ```json
           {"a": 1}
           ```
        """
    )
    assert (python.line, python.lang, python.text) == (3, "python", "print(1)\n")
    assert console.text == "$ echo '```'\n"
    assert (tilde.lang, tilde.text) == ("yaml", "a: 1\n")
    assert (listed.lang, listed.text) == ("json", '{"a": 1}\n')


def test_an_inline_code_span_is_not_a_fence() -> None:
    assert doc("``` `x` ```\n\n```python\npass\n```\n")[0].lang == "python"


def test_an_unclosed_block_is_an_error() -> None:
    with pytest.raises(MarkdownError, match=r"x\.md:1: the block opened here is never closed"):
        doc("```python\npass\n")


def test_directives_attach_to_the_next_block() -> None:
    (block,) = doc(
        """\
        <!-- doctest: stand-in for="helm install" run="helm template x |
             kubectl apply --dry-run=server -f -" -->

        <!-- doctest: setup lang=bash
        echo one
          echo two
        -->
        ```console
        $ helm install x
        ```
        """
    )
    stand_in, setup = block.directives
    assert stand_in.args == {
        "for": "helm install",
        "run": "helm template x |      kubectl apply --dry-run=server -f -",
    }
    assert (setup.args, setup.body, setup.line) == ({"lang": "bash"}, "echo one\n  echo two\n", 4)


def test_document_directives_go_anywhere() -> None:
    document = parse("x.md", "# T\n\n<!-- doctest: operator args='--workers 1' -->\n\nText.\n")
    assert document.get("operator").args == {"args": "--workers 1"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<!-- doctest: nope -->\n```python\n```\n", "unknown directive 'nope'"),
        ("<!-- doctest: skip -->\n```python\n```\n", r"missing \['reason'\]"),
        ("<!-- doctest: skip reason=x why=y -->\n```python\n```\n", r"unknown \['why'\]"),
        ("<!-- doctest: skip reason -->\n```python\n```\n", "expected key=value"),
        ("<!-- doctest: skip reason=x -->\nText.\n```python\n```\n", "not followed by a code"),
        ("<!-- doctest: skip reason=x -->\n", "at the end of the document"),
        ("<!-- doctest: schema kind=Barrier -->\n```python\n```\n", "not apply to a python"),
        ("<!-- doctest: figure\nbody\n-->\n```text\n```\n", "figure: expected key=value"),
        (
            "<!-- doctest: timeout seconds=1 -->\n"
            "<!-- doctest: timeout seconds=2 -->\n```python\n```\n",
            "timeout given twice",
        ),
    ],
)
def test_bad_directives_are_errors(text: str, error: str) -> None:
    def check() -> None:
        for block in doc(text):
            classify(block)

    with pytest.raises(MarkdownError, match=error):
        check()


def test_every_directive_is_documented() -> None:
    readme = README.read_text()
    for name in DIRECTIVES:
        assert re.search(rf"^\| `{re.escape(name)}[ `]", readme, re.MULTILINE), name


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("```\nls\n```\n", "must be marked as command output"),
        ("```dockerfile\nFROM x\n```\n", "no check for a 'dockerfile' block"),
        ("```console\n# only a comment\n```\n", "without a command"),
        ("```console\noutput\n$ ls\n```\n", "output before the first"),
        (
            '<!-- doctest: stand-in for="helm" run="true" -->\n```console\n$ ls\n```\n',
            "matches no command",
        ),
        (
            '<!-- doctest: covered-by for="ls" test="tests/nope.py" -->\n```console\n$ ls\n```\n',
            "no test file tests/nope.py",
        ),
        (
            '<!-- doctest: covered-by for="ls -l /nowhere" test="tests/docs/README.md" -->\n'
            "```console\n$ ls -l /nowhere\n```\n",
            "does not mention",
        ),
        ('```python\n--8<-- "examples/nope.py"\n```\n', "includes a missing file"),
    ],
)
def test_blocks_that_break_the_rules(text: str, error: str) -> None:
    (block,) = doc(text)
    with pytest.raises(MarkdownError, match=error):
        classify(block)


def test_commands_output_and_stand_ins() -> None:
    (block,) = doc(
        """\
        <!-- doctest: stand-in for="make bench" run="make -n bench" -->
        <!-- doctest: until for="serve" text="ready" -->
        <!-- doctest: replace old="team-a" new="$NS" -->
        ```console
        $ serve --namespace team-a \\
            --port 0        # a comment
        ready
        $ make bench
        $ kubectl get x
        NAME   AGE
        x      5m
        ```
        """
    )
    serve, bench, get = commands(block)
    assert serve.documented == "serve --namespace team-a --port 0 # a comment"
    assert serve.run == "serve --namespace $NS \\\n    --port 0        # a comment"
    assert (serve.until, serve.output, serve.line) == ("ready", ("ready",), 5)
    assert (bench.run, bench.until) == ("make -n bench", None)
    assert get.output == ("NAME   AGE", "x      5m")


def test_a_block_without_prompts_is_a_list_of_commands() -> None:
    (block,) = doc(
        "```console\npip install x   # the SDK\n\n# a comment\nhelm install y \\\n  z\n```\n"
    )
    assert [c.documented for c in commands(block)] == [
        "pip install x # the SDK",
        "helm install y z",
    ]


def test_documented_output_matches_in_order_with_placeholders() -> None:
    actual = "header\nNAME    PHASE   AGE\nload    Open    12s\ntrain   Waiting 3s\n"
    assert missing_output(("NAME PHASE AGE", "load Open …", "train Waiting …"), actual) == []
    assert missing_output(("load  Open  5m",), actual, r"\d+m$") == []
    assert missing_output(("train Waiting …", "load Open …"), actual) == ["load Open …"]
    assert missing_output(("load Closed …",), actual) == ["load Closed …"]
