"""The monitor's HTTP port: Prometheus ``/metrics`` and the drift report at ``/report/MODEL``.

One small WSGI app on a threading server. Every path but ``/report/...`` goes to
prometheus_client's own ``make_wsgi_app``, so ``/metrics`` answers exactly as
``start_http_server`` made it answer (content negotiation, gzip, ``name[]`` filters).
``/report/MODEL?version=V&window=W`` renders ``monitor.report``'s page; the model name is
checked as everywhere else, the query strictly (known keys, once each, valid values), and a
refusal is a 4xx with a plain-text message naming what was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from driftgate.core._proto.driftgate.monitor.v1 import monitor_pb2 as pb
from driftgate.core.errors import (
    DriftgateError,
    FailedPrecondition,
    InvalidInput,
    ModelNotFound,
    quote,
)
from driftgate.monitor.report import gather, render
from driftgate.monitor.servicer import MonitorServicer
from driftgate.monitor.validation import check_model_name

__all__ = ["ReportPage", "WebServer", "parse_report_query", "report_page"]

log = logging.getLogger(__name__)

#: (model, version or None, window seconds or None) -> the page
ReportPage = Callable[[str, int | None, float | None], str]
_PREFIX = "/report/"
_QUERY_LIMIT = 256
_ANSWER_SECONDS = 60.0
StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("http %s", format % args)


class _InProcess:
    """The report's questions answered by this process's servicer, on its event loop (the
    HTTP threads wait for the answers), so the page shows what gRPC clients are told."""

    def __init__(self, servicer: MonitorServicer, loop: asyncio.AbstractEventLoop) -> None:
        self._servicer, self._loop = servicer, loop

    def _wait(self, call: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result(_ANSWER_SECONDS)

    def drift(self, request: pb.GetDriftRequest) -> pb.GetDriftResponse:
        return self._wait(self._servicer.GetDrift(request, None))  # type: ignore[no-any-return]

    def accuracy(self, request: pb.GetAccuracyRequest) -> pb.GetAccuracyResponse:
        return self._wait(self._servicer.GetAccuracy(request, None))  # type: ignore[no-any-return]

    def events(self, request: pb.ListEventsRequest) -> pb.ListEventsResponse:
        return self._wait(self._servicer.ListEvents(request, None))  # type: ignore[no-any-return]


def report_page(servicer: MonitorServicer, loop: asyncio.AbstractEventLoop) -> ReportPage:
    """The page of ``/report/MODEL``, from ``servicer``'s answers."""
    source = _InProcess(servicer, loop)

    def page(model: str, version: int | None, window: float | None) -> str:
        return render(gather(source, model, version, window))

    return page


def parse_report_query(query: str) -> tuple[int | None, float | None]:
    """``version`` and ``window`` from a query string; InvalidInput names a bad part."""
    from driftgate.monitor._cli import parse_duration

    if len(query) > _QUERY_LIMIT:
        raise InvalidInput(f"query string: {len(query)} characters, expected at most 256")
    try:
        fields = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidInput(f"query string {quote(query)}: expected key=value pairs") from None
    unknown = sorted(set(fields) - {"version", "window"})
    if unknown:
        raise InvalidInput(f"query parameter {quote(unknown[0])}: expected version or window")
    for key, values in fields.items():
        if len(values) > 1:
            raise InvalidInput(f"query parameter {key}: given {len(values)} times, expected once")
    version = None
    if "version" in fields:
        text = fields["version"][0]
        if not text.isdigit() or int(text) < 1:
            raise InvalidInput(f"version {quote(text)}: expected a positive integer")
        version = int(text)
    window = None
    if "window" in fields:
        try:
            window = parse_duration(fields["window"][0])
        except argparse.ArgumentTypeError as exc:
            raise InvalidInput(f"window: {exc} or total") from None
    return version, window


class WebServer:
    """The HTTP listener; ``start`` binds (port 0: a free one) and serves on a thread."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, report: ReportPage
    ) -> None:
        self._metrics = make_wsgi_app(registry)
        self._report = report
        family = _Server6 if ":" in host else _Server
        self._httpd = make_server(
            host, port, self._app, server_class=family, handler_class=_QuietHandler
        )
        self.port: int = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="monitor-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(_PREFIX):
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "expected GET or HEAD")
        try:
            model = path[len(_PREFIX) :]
            check_model_name("model in /report/MODEL", model)
            version, window = parse_report_query(environ.get("QUERY_STRING", ""))
            page = self._report(model, version, window)
        except ModelNotFound as exc:
            return _text(start_response, "404 Not Found", exc.message)
        except (InvalidInput, FailedPrecondition) as exc:
            return _text(start_response, "400 Bad Request", exc.message)
        except DriftgateError as exc:
            return _text(start_response, "503 Service Unavailable", exc.message)
        except Exception:
            log.exception("report page failed")
            return _text(start_response, "500 Internal Server Error", "the report failed")
        body = page.encode("utf-8")
        start_response(
            "200 OK",
            [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]


def _text(start_response: StartResponse, status: str, message: str) -> list[bytes]:
    body = (message + "\n").encode("utf-8")
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]
