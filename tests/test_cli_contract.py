"""One contract for every command: errors on stderr and nothing on stdout, the exit codes
0 ok / 1 refused / 2 usage / 3 unreachable, JSON where --json is given, --log-level
anywhere, defaults and positionals described in --help, a bad DRIFTGATE_ variable reported
as a usage error. In-process through ``driftgate.cli.main`` against a server that is not
there; a few through a subprocess, as a shell runs them."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from prometheus_client import enable_created_metrics
from sklearn.linear_model import LogisticRegression

from driftgate import __version__
from driftgate.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent

# Every client command with the arguments of a valid call, and which service it calls.
CLIENT_COMMANDS = {
    "deploy": (["m", "1"], "gateway"),
    "traffic": (["m", "--canary", "10"], "gateway"),
    "shadow": (["m", "2"], "gateway"),
    "promote": (["m"], "gateway"),
    "rollback": (["m"], "gateway"),
    "status": ([], "gateway"),
    "history": (["m"], "gateway"),
    "drift": (["m"], "monitor"),
    "accuracy": (["m", "--window", "1h"], "monitor"),
    "events": ([], "monitor"),
    "retrain": (["m"], "monitor"),
    "report": (["m", "--out", "report.html"], "monitor"),
    "health": ([], "gateway"),
}
# A bad argument of each command, and what the message names.
BAD_ARGUMENTS = {
    "deploy": (["m", "one"], "expected a version number"),
    "traffic": (["m", "--canary", "150"], "from 0 to 100"),
    "shadow": (["m"], "give either a VERSION to shadow or --off"),
    "promote": ([], "MODEL"),
    "rollback": (["m", "--to", "0"], "expected a version number"),
    "status": (["--timeout", "soon"], "--timeout"),
    "history": (["m", "--limit", "many"], "--limit"),
    "drift": (["m", "--window", "fortnight"], "not a duration"),
    "accuracy": (["m", "--version", "latest"], "--version"),
    "events": (["--limit", "x"], "--limit"),
    "retrain": (["m", "--token-file", "/nonexistent/token"], "--token-file"),
    "report": (["m", "--out", "-", "--json"], "would share standard output"),
    "health": (["--gateway", "a:1", "--monitor", "b:2"], "not allowed with"),
    "convert": (["m", "--estimator", "e.joblib"], "--data"),
    "serve": (["--max-queue-size", "0"], "--max-queue-size must be at least 1"),
    "monitor": (["--window", "soon"], "not a duration"),
    "up": (["--grpc-port", "http"], "--grpc-port"),
    "demo": (["--rate", "fast"], "--rate"),
}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("DRIFTGATE_GATEWAY", "DRIFTGATE_MONITOR", "DRIFTGATE_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    yield
    enable_created_metrics()  # type: ignore[no-untyped-call]  # main() turns them off


@pytest.fixture(scope="module")
def stopped() -> str:
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", sorted(CLIENT_COMMANDS))
@pytest.mark.parametrize("as_json", [False, True])
def test_a_stopped_server_exits_3_with_the_reason_on_stderr(
    command: str, as_json: bool, stopped: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, service = CLIENT_COMMANDS[command]
    argv = [command, *args, f"--{service}", stopped, "--timeout", "5"]
    code, out, err = _run(capsys, *argv, *(["--json"] if as_json else []))
    assert code == 3, err
    assert out == ""  # nothing a `| jq` would read
    assert err.startswith(f"driftgate {command}: ") and stopped in err and "UNAVAILABLE" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_exits_2_naming_it(
    command: str, stopped: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args, named = BAD_ARGUMENTS[command]
    service = CLIENT_COMMANDS.get(command, ([], None))[1]
    address = [f"--{service}", stopped] if service else []
    code, out, err = _run(capsys, command, *args, *address)
    assert code == 2, err
    assert out == "" and named in err and "Traceback" not in err


def test_log_level_anywhere_and_a_bad_one_is_a_usage_error(
    stopped: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["--log-level", "debug", "status", "--gateway", stopped],
        ["status", "--gateway", stopped, "--log-level", "ERROR"],
    ):
        assert _run(capsys, *argv)[0] == 3
    code, out, err = _run(capsys, "status", "--log-level", "chatty")
    assert code == 2 and out == "" and "expected one of DEBUG, INFO" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"driftgate {__version__}"
    code, out, _ = _run(capsys, "convert", "--help")
    assert code == 0 and "99.9% of the rows" in out and "%%" not in out
    code, out, _ = _run(capsys, "status", "--help")
    assert code == 0 and "DRIFTGATE_CONTROL_TOKEN" not in out and "--token" not in out
    assert "3  the gateway is unreachable" in out
    code, out, _ = _run(capsys, "up", "--help")
    assert "gateway /metrics (8002) (default: 8002)" in " ".join(out.split())


def test_help_never_prints_a_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRIFTGATE_CONTROL_TOKEN", "s3cret-from-env")
    monkeypatch.setenv("DRIFTGATE_INGEST_TOKEN", "s3cret-from-env")
    for command in ("deploy", "retrain", "serve", "monitor", "up"):
        code, out, _ = _run(capsys, command, "--help")
        assert code == 0 and "--token" in out.replace("--control-token", "--token")
        assert "s3cret-from-env" not in out, command


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_describes_its_positionals_and_takes_log_level() -> None:
    for name, parser in _commands().items():
        for action in parser._actions:
            if not action.option_strings:
                assert action.help, f"driftgate {name}: positional {action.dest} has no help"
        assert "--log-level" in parser._option_string_actions, name


def test_client_commands_share_one_address_flag_per_service() -> None:
    commands = _commands()
    for name, (_, service) in CLIENT_COMMANDS.items():
        options = commands[name]._option_string_actions
        assert f"--{service}" in options and "--timeout" in options and "--json" in options
    for name in ("deploy", "traffic", "shadow", "promote", "rollback", "retrain"):
        options = commands[name]._option_string_actions
        assert {"--token", "--token-file", "--control-token"} <= set(options), name


@pytest.mark.integration  # two subprocesses
def test_a_bad_environment_variable_is_a_usage_error_of_the_command_that_reads_it() -> None:
    env = {"PATH": "/usr/bin:/bin", "DRIFTGATE_GRPC_PORT": "abc"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "driftgate", *argv],
            capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
        )  # fmt: skip

    helped = run("--help")
    assert helped.returncode == 0 and "serve" in helped.stdout
    served = run("serve")
    assert served.returncode == 2 and served.stdout == ""
    assert "driftgate serve: DRIFTGATE_GRPC_PORT='abc': expected an integer" in served.stderr
    assert "Traceback" not in served.stderr


def test_convert_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] > 0).astype(int)
    joblib.dump(LogisticRegression().fit(x, y), tmp_path / "e.joblib")
    np.savez(tmp_path / "d.npz", X=x, y=y)
    argv = ["convert", "m", "--estimator", str(tmp_path / "e.joblib"),
            "--data", str(tmp_path / "d.npz"),
            "--repository", str(tmp_path / "models"), "--json"]  # fmt: skip
    code, out, err = _run(capsys, *argv)
    result = json.loads(out)
    assert code == 0, err
    assert result["written"] is True and result["version"] == 1
    assert result["parity"]["passed"] is True and isinstance(result["parity"]["rows"], int)
    assert Path(result["path"], "model.onnx").is_file()
    code, out, err = _run(capsys, *argv[:3], str(tmp_path / "d.npz"), *argv[4:])
    assert code == 2 and out == "" and "d.npz" in err
