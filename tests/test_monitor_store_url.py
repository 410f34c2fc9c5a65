"""The monitor's database URL from a file (``--store-url-file``, DRIFTGATE_STORE_URL_FILE):
Compose and Kubernetes hand secrets over as files, and the URL holds the password. Read once
at start with surrounding whitespace stripped; a missing or empty file, or a URL given both
ways, is a usage error (exit 2) naming the flag, before anything binds a port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import enable_created_metrics

from driftgate.cli import build_parser, main
from driftgate.monitor._cli import settings_from

URL = "postgresql+psycopg://driftgate:s3cret@postgres:5432/driftgate"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("DRIFTGATE_STORE_URL", "DRIFTGATE_STORE_URL_FILE"):
        monkeypatch.delenv(name, raising=False)
    yield
    enable_created_metrics()  # type: ignore[no-untyped-call]  # main() turns them off


def _secret(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "store-url"
    path.write_text(text)
    return path


def test_the_url_is_read_from_the_file_of_the_flag_or_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _secret(tmp_path, f"  {URL}\n")  # as `echo ... > file` leaves it
    args = build_parser().parse_args(["monitor", "--store-url-file", str(secret)])
    assert settings_from(args).store_url == URL
    monkeypatch.setenv("DRIFTGATE_STORE_URL_FILE", str(secret))
    assert settings_from(build_parser().parse_args(["monitor"])).store_url == URL
    monkeypatch.delenv("DRIFTGATE_STORE_URL_FILE")
    assert settings_from(build_parser().parse_args(["monitor"])).store_url is None


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["monitor", "--grpc-port", "0", "--metrics-port", "-1", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (code, out, err)
    assert "Traceback" not in err and URL not in err  # the password is never printed
    return err


def test_a_missing_or_empty_file_is_a_usage_error_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent"
    err = _refused(capsys, "--store-url-file", str(missing))
    assert f"--store-url-file {missing}: No such file or directory" in err
    err = _refused(capsys, "--store-url-file", str(_secret(tmp_path, " \n")))
    assert "--store-url-file" in err and "is empty: expected a database URL" in err


def test_the_url_given_both_ways_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = str(_secret(tmp_path, URL))
    for argv, variables in (
        (["--store-url", URL, "--store-url-file", secret], {}),
        (["--store-url-file", secret], {"DRIFTGATE_STORE_URL": URL}),
        (["--store-url", URL], {"DRIFTGATE_STORE_URL_FILE": secret}),
    ):
        with monkeypatch.context() as patch:
            for name, value in variables.items():
                patch.setenv(name, value)
            err = _refused(capsys, *argv)
        assert "--store-url" in err and "--store-url-file" in err and "not both" in err
