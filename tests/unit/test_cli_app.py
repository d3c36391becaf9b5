"""koncli's command tree, option handling and exit codes, without a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from konductor_sdk.cli import cli, main


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "KONDUCTOR_CONFIG",
        "KONDUCTOR_NAMESPACE",
        "KONDUCTOR_OUTPUT",
        "KONDUCTOR_TTL",
        "KONDUCTOR_CONTEXT",
        "KONDUCTOR_KUBECONFIG",
        "KONDUCTOR_RETRY_BUDGET",
        "KUBERNETES_SERVICE_HOST",
        "POD_NAME",
        "POD_NAMESPACE",
        "POD_UID",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))


def commands(group: click.Command) -> dict[str, click.Command]:
    """The subcommands of ``group`` by name (loading them, as click does for help)."""
    assert isinstance(group, click.Group)
    ctx = click.Context(group)
    found = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    return {name: cmd for name, cmd in found.items() if cmd is not None}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_every_primitive_has_a_group_with_the_generic_commands() -> None:
    top = commands(cli)
    for kind in ("semaphore", "mutex", "rwmutex", "lease", "barrier", "gate", "once", "waitgroup"):
        assert {"get", "list", "delete", "status"} <= set(commands(top[kind])), kind
    assert {"run", "watch", "create", "delete", "release", "completion", "config"} <= set(top)


@pytest.mark.parametrize(
    ("kind", "verbs"),
    [
        ("semaphore", {"create", "acquire", "release", "set-permits"}),
        ("mutex", {"create", "lock", "unlock"}),
        ("rwmutex", {"create", "lock", "unlock"}),
        ("lease", {"create", "acquire", "release", "elect"}),
        ("barrier", {"create", "wait", "arrive", "reset", "set-expected"}),
        ("gate", {"create", "wait", "mark"}),
        ("once", {"run", "reset"}),
        ("waitgroup", {"add", "done", "wait"}),
    ],
)
def test_verbs(kind: str, verbs: set[str]) -> None:
    assert verbs <= set(commands(commands(cli)[kind]))


def test_global_options_work_before_and_after_the_subcommand(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "-n", "before", "config", "view", "-o", "json")
    assert code == 0
    assert json.loads(out)["namespace"] == "before"
    code, out, _ = run(capsys, "-n", "before", "config", "view", "-n", "after", "-o", "json")
    assert json.loads(out)["namespace"] == "after"  # the later flag wins


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "run", "--help")
    assert code == 0
    assert "5    lost" in out
    assert "--grace-period" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("semaphore", "acquire", "gpu"), "--ttl is required"),
        (("mutex", "lock", "m", "--for-pod"), "--for-pod needs the pod's identity"),
        (("rwmutex", "lock", "rw", "--ttl", "5"), "exactly one of --read or --write"),
        (("rwmutex", "lock", "rw", "--ttl", "5", "--read", "--write"), "exactly one of --read"),
        (("-n", "Bad_NS", "semaphore", "list"), "-n/--namespace must be a namespace name"),
        (("semaphore", "list", "--namespace", "a.b"), "got 'a.b'"),
        (
            ("semaphore", "acquire", "gpu", "--ttl", "5", "--nowait", "--timeout", "5"),
            "--nowait and --timeout contradict each other",
        ),
        (("lease", "acquire", "l", "--ttl", "5", "--nowait", "--timeout", "1"), "contradict"),
        (("mutex", "lock", "m", "--ttl", "5", "--timeout", "2", "--nowait"), "contradict"),
        (("--retry-budget", "-1", "semaphore", "list"), "--retry-budget"),
        (("once", "run", "x", "--"), "COMMAND"),
        (("run", "--semaphore", "gpu:0", "--", "true"), "weight must be an integer >= 1"),
        (("run", "--mutex", "m", "--mutex", "m", "--", "true"), "is given twice"),
        (("delete", "semaphore"), "KIND needs --selector"),
        (("release", "semaphore", "-l", "a=b"), "exactly one of --holder ID or --all-holders"),
        (("watch", "nosuchkind"), "unknown kind 'nosuchkind'"),
        (("-o", "xml", "semaphore", "list"), "'xml' is not one of"),
        (("semaphore", "acquire", "gpu", "--ttl", "0"), "0 is not in the range"),
        (("semaphore", "acquire", "gpu", "--ttl", "5", "--timeout", "0"), "--timeout"),
    ],
)
def test_usage_errors_exit_2_before_any_connection(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragment: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert fragment in err


def test_a_bad_namespace_in_the_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KONDUCTOR_NAMESPACE", "Bad_NS")
    code, out, err = run(capsys, "semaphore", "list")
    assert (code, out) == (2, "")
    assert err.startswith("koncli: KONDUCTOR_NAMESPACE must be a namespace name")


def test_a_missing_kubeconfig_is_reported_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "semaphore", "list")
    assert code == 2
    assert err.startswith("koncli: kubeconfig: no such file")
    assert "(from $KUBECONFIG; choose one with --kubeconfig" in err  # CLI words, not SDK ones
    assert "kubeconfig=" not in err
    assert "Traceback" not in err


def test_bad_config_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("ttl = 0\n")
    monkeypatch.setenv("KONDUCTOR_CONFIG", str(cfg))
    code, _, err = run(capsys, "config", "view")
    assert code == 2
    assert "ttl must be an integer number of seconds in [1, 86400], got 0" in err


def test_config_path_follows_flag_and_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "config", "path")[1].strip() == str(
        tmp_path / "xdg" / "konductor" / "config.toml"
    )
    monkeypatch.setenv("KONDUCTOR_CONFIG", str(tmp_path / "env.toml"))
    assert run(capsys, "config", "path")[1].strip() == str(tmp_path / "env.toml")
    assert run(capsys, "config", "path", "--config", "/x.toml")[1].strip() == "/x.toml"


def test_completion_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in ("bash", "zsh", "fish"):
        code, out, _ = run(capsys, "completion", shell)
        assert code == 0
        assert "_KONCLI_COMPLETE" in out
    assert run(capsys, "completion", "tcsh")[0] == 2


def test_help_imports_no_command_module_nor_the_sdk_stack() -> None:
    """``koncli --help`` stays fast by importing what it shows, nothing else (the time itself
    is measured by ``benchmarks/startup.py``)."""
    code = (
        "import sys\n"
        "from konductor_sdk.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('rich', 'yaml', 'anyio', 'aiohttp', 'kubernetes_asyncio', 'attrs')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "                or m.startswith(('konductor_sdk.cli._run', 'konductor_sdk.cli._bulk',\n"
        "                                 'konductor_sdk.cli._semaphore', 'konductor_sdk._')))\n"
        "print(loaded, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert (
        done.stderr.strip() == "['konductor_sdk._kernel', 'konductor_sdk._kernel.errors', "
        "'konductor_sdk._kernel.names']"
    )
    assert "semaphore (sem)" in done.stdout


def test_kinds_answer_to_their_crd_short_names_and_plurals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    from konductor_sdk.cli import _kinds, _objects

    for text in _kinds.crd_texts():
        names = yaml.safe_load(text)["spec"]["names"]
        assert _kinds.crd_names(text) == (names["kind"], list(names.get("shortNames") or []))
        kind = names["kind"].lower()
        for alias in [names["plural"], *names.get("shortNames", [])]:
            assert _kinds.aliases()[alias] == kind
            assert _objects.resource_for(alias) is _objects.KINDS[kind]
            code, out, _ = run(capsys, alias, "--help")
            assert code == 0
            # Sessions and claims have only the generic commands (list, get, delete).
            assert ("list" if kind in ("session", "claim") else "status") in out
    assert _kinds.short_names("semaphore") == ["sem"]


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: dev
  context: {cluster: c, user: u, namespace: ns}
- name: prod
  context: {cluster: c, user: u}
current-context: dev
"""


@pytest.mark.parametrize(
    ("args", "env", "chosen_by"),
    [
        (("--context", "nope"), {}, "--context"),
        ((), {"KONDUCTOR_CONTEXT": "nope"}, "KONDUCTOR_CONTEXT"),
    ],
)
def test_an_unknown_context_is_a_usage_error_in_cli_words(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    chosen_by: str,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = run(capsys, *args, "semaphore", "list")
    assert (code, out) == (2, "")
    assert err == (
        f"koncli: kubeconfig {str(kubeconfig)!r} has no context 'nope' (its contexts: dev, "
        f"prod); the context was chosen by {chosen_by}\n"
    )


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.mark.parametrize(("argv", "code"), [(["config", "path"], 0), (["no-such"], 2)])
def test_the_executable_exits_without_tearing_the_interpreter_down(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], code: int
) -> None:
    """``koncli run`` must return once its releases are written, not after the ~1 s an
    interpreter needs to dismantle the HTTP stack's modules: the executable ends with
    ``os._exit`` after flushing its output."""
    import importlib.metadata

    import konductor_sdk.cli as cli_module

    (script,) = [
        e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "koncli"
    ]
    assert script.value == "konductor_sdk.cli:entry_point"

    def fake_exit(status: int) -> None:
        raise _Exited(status)

    monkeypatch.setattr(cli_module.os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["koncli", *argv])
    with pytest.raises(_Exited) as info:
        cli_module.entry_point()
    assert info.value.code == code
    out, err = capsys.readouterr()
    assert (out if code == 0 else err).strip()


def test_config_view_tells_which_kubeconfig_is_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    code, out, _ = run(capsys, "config", "view", "-o", "json", "--retry-budget", "7")
    view = json.loads(out)
    assert code == 0
    assert view["kubeconfig"] == str(tmp_path / "a")
    assert view["kubeconfigFrom"] == "$KUBECONFIG (only its first file is read)"
    assert view["sources"]["kubeconfig"] == "env"
    assert (view["retryBudget"], view["sources"]["retry_budget"]) == (7, "flag")

    monkeypatch.setenv("KONDUCTOR_KUBECONFIG", str(tmp_path / "k"))
    view = json.loads(run(capsys, "config", "view", "-o", "json")[1])
    assert (view["kubeconfig"], view["kubeconfigFrom"]) == (
        str(tmp_path / "k"),
        "KONDUCTOR_KUBECONFIG",
    )

    monkeypatch.delenv("KONDUCTOR_KUBECONFIG")
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    view = json.loads(run(capsys, "config", "view", "-o", "json")[1])
    assert (view["kubeconfig"], view["kubeconfigFrom"]) == (
        str(tmp_path / "home" / ".kube" / "config"),
        "default",
    )
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    view = json.loads(run(capsys, "config", "view", "-o", "json")[1])
    assert view["kubeconfig"] == "in-cluster"
