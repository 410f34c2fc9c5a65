"""The drift report from real gateway and monitor processes, opened in a real browser.

One feature of the served rows is shifted; `driftgate report` writes the page and the monitor
serves it at /report/MODEL. Headless Chromium (Debian's package) loads both: the DOM lists
the shifted feature first, the page logs no console error or refused load, and its
screenshot is a picture, not a blank page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from driftgate.client import Gateway, Monitor
from driftgate.converter import convert
from tests.processes import DriftgateProcess, start_gateway

pytestmark = pytest.mark.integration

MODEL = "loans"
SHIFTED = 2  # the column moved by three of its standard deviations in production
ROWS = 250


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """Gateway and monitor with ROWS predictions, the SHIFTED column moved, all labelled."""
    work = tmp_path_factory.mktemp("report")
    x, y = make_classification(3000, 4, n_informative=3, n_redundant=0, random_state=5)
    x = x.astype(np.float32)
    convert(LogisticRegression(max_iter=500).fit(x[:2000], y[:2000]), x[:2000], MODEL,
            work / "models", labels=y[:2000])  # fmt: skip
    args = ["--repository", str(work / "models"), "--data-dir", str(work / "data"),
            "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0"]  # fmt: skip
    monitor = DriftgateProcess("monitor", args, work, {}).wait_ready()
    gateway = start_gateway(
        work / "models", work, "--monitor", monitor.address, "--report-interval", "0.2",
        env={"DRIFTGATE_RECORD_MAX_PER_SECOND": "0"},
    )  # fmt: skip
    try:
        production = x[2000 : 2000 + ROWS].copy()
        production[:, SHIFTED] += 3.0 * x[:2000, SHIFTED].std()
        with Gateway(gateway.address) as client:
            for i, row in enumerate(production):
                client.infer(MODEL, row[None, :], request_id=f"r{i}")
            client.send_labels({f"r{i}": int(y[2000 + i]) for i in range(ROWS)}, model=MODEL)
        _wait_for_labels(monitor.address)
        yield work, monitor
    finally:
        gateway.terminate()
        monitor.terminate()


def _wait_for_labels(address: str) -> None:
    deadline = time.monotonic() + 60
    with Monitor(address) as monitor:
        while time.monotonic() < deadline:
            drift = monitor.drift(MODEL, window=0)
            if drift.rows >= ROWS and monitor.accuracy(MODEL, window=0).label_count >= ROWS:
                return
            time.sleep(0.2)
    raise TimeoutError("the monitor did not see every row and label within 60 s")


def _feature_names(address: str) -> list[str]:
    with Monitor(address) as monitor:  # model.json order
        return [f.name for f in monitor.drift(MODEL, window=0).features]


def _browse(url: str, work: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    profile = work / f"chromium-{time.monotonic_ns()}"
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *flags, url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip


def _console_errors(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines()
        if "CONSOLE" in line or "Refused to" in line or "Uncaught" in line
    ]  # fmt: skip


def _sections(dom: str) -> list[str]:
    names = []
    for part in dom.split('<section class="feature" id="feature-')[1:]:
        names.append(bytes.fromhex(part.split('"', 1)[0]).decode())
    return names


def test_the_cli_writes_a_page_that_chromium_renders_with_the_shifted_feature_first(
    served: tuple,
) -> None:
    work, monitor = served
    out = work / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "driftgate", "report", MODEL, "--monitor", monitor.address,
         "--window", "1h", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = _feature_names(monitor.address)
    answer = json.loads(done.stdout)
    assert answer["features"][0] == names[SHIFTED] and answer["dataset_verdict"] == "DRIFT"

    page = _browse(out.as_uri(), work, "--dump-dom")
    assert _console_errors(page.stderr) == []
    assert _sections(page.stdout)[0] == names[SHIFTED]
    assert set(_sections(page.stdout)) >= set(names)
    assert "label-free estimate" in page.stdout and "labelled accuracy" in page.stdout

    shot = work / "report.png"
    _browse(out.as_uri(), work, f"--screenshot={shot}", "--window-size=1200,1600",
            "--hide-scrollbars")  # fmt: skip
    assert _distinct_colours(shot) >= 8  # text, two bar colours, verdict badges, lines


def _distinct_colours(png: Path) -> int:
    import matplotlib.image

    pixels = np.asarray(matplotlib.image.imread(png))[..., :3]
    return len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_monitor_serves_the_report_beside_its_metrics(served: tuple) -> None:
    work, monitor = served
    base = f"http://127.0.0.1:{monitor.metrics_port}"
    status, kind, body = _get(f"{base}/report/{MODEL}?window=1h")
    assert status == 200 and kind.startswith("text/html")
    names = _feature_names(monitor.address)
    assert _sections(body)[0] == names[SHIFTED]
    page = _browse(f"{base}/report/{MODEL}?window=1h", work, "--dump-dom")
    assert _console_errors(page.stderr) == [] and _sections(page.stdout)[0] == names[SHIFTED]

    status, kind, body = _get(f"{base}/metrics")
    assert status == 200 and kind.startswith("text/plain") and "driftgate_monitor" in body
    for path, code, message in (
        ("/report/nobody", 404, "nobody"),
        ("/report/bad%20name", 400, "invalid model name"),
        (f"/report/{MODEL}?versoin=1", 400, "versoin"),
        (f"/report/{MODEL}?window=soon", 400, "window"),
        (f"/report/{MODEL}?version=99", 404, "99"),
    ):
        status, kind, body = _get(base + path)
        assert (status, kind.split(";")[0]) == (code, "text/plain"), (path, body)
        assert message in body, (path, body)
