"""The model repository in object storage: S3 and S3-compatible stores (MinIO, Ceph), via obstore.

Layout under ``s3://bucket/prefix``::

    <model>/deployment.json            replaced by conditional writes only (If-Match on its
                                       ETag; If-None-Match to create it)
    <model>/history/<revision>.json    one object per change of deployment.json
    <model>/quarantine/<version>.json  a version that hung or crashed onnxruntime
    <model>/<version>/CLAIM            the writer's hold on the number (If-None-Match), first
    <model>/<version>/<files>          every file of the version, uploaded next
    <model>/<version>/COMPLETE         the completion marker, last: the sha256 of each file

A version is visible (listed, loadable) only once its ``COMPLETE`` marker exists, and it is
immutable from then on. Readers keep a local copy of each version they open in a cache
directory, checked file by file against the marker's sha256 (and ``model.onnx`` against
``model.json`` by ``Repository.read_model_bytes``): onnxruntime, the monitor and retraining
read local files. Polling is bounded: one listing of the model's prefix shows its version
prefixes and the ETag of ``deployment.json``; a marker is looked up only for a prefix not yet
seen complete, and ``deployment.json`` is fetched only when its ETag changed.

Credentials, region and endpoint come as for every S3 tool: the ``AWS_*`` environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` for S3-compatible stores), web identity on Kubernetes, or
the instance's role. Errors of the store become this project's errors naming the URL.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftgate.core.errors import FailedPrecondition, InvalidInput, ModelNotFound
from driftgate.core.repository import (
    CorruptVersion,
    DeploymentConflict,
    Repository,
    _json_bytes,
    _stamp_metadata,
    _validate_version,
    validate_model_name,
)
from driftgate.core.s3 import (
    SCHEME,
    Signature,
    bucket_and_prefix,
    connect,
    default_cache,
    get_with_meta,
    head_signature,
    list_dirs,
    put,
    repository_location,
    translated,
)

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = ["MARKER", "ObjectRepository", "open_repository", "repository_location"]

MARKER = "COMPLETE"
CLAIM = "CLAIM"
#: what serving reads; the estimator and the training sample are fetched only when asked for
SERVING_FILES = ("model.onnx", "model.json", "reference.json")
_FILE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_VERSION_PREFIX = re.compile(r"0|[1-9][0-9]{0,17}")
_MAX_CLAIMS = 1000
#: seconds for which a model's listing stands for its deployment.json (a scan reads both)
LISTING_FRESH = 1.0
#: seconds a prefix may stay without its marker before it counts as abandoned ...
ABANDONED_AFTER = 120.0
#: ... after which its marker is looked up only this often
ABANDONED_CHECK = 60.0


def open_repository(location: Path | str, cache_dir: Path | None = None) -> Repository:
    """The repository at ``location``: a directory, or ``s3://bucket/prefix``.

    ``cache_dir`` holds the local copies of an object store's versions (default
    ``$DRIFTGATE_REPOSITORY_CACHE``, else ``$XDG_CACHE_HOME/driftgate`` or ``~/.cache/driftgate``).
    """
    if isinstance(location, Repository):
        return location
    text = str(location)
    if not text.startswith(SCHEME):
        return Repository(Path(location))
    url = text.rstrip("/")
    bucket, prefix = bucket_and_prefix(url)
    cache = cache_dir or default_cache() / bucket / (prefix or "_")
    return ObjectRepository(url, connect(url, bucket, prefix), cache)


class ObjectRepository(Repository):
    """A model repository in an S3 bucket; ``root`` is the local cache of its versions.

    Usage: ``open_repository("s3://models/prod").versions("iris")``. Thread-safe.
    """

    def __init__(self, url: str, store: S3Store, cache: Path) -> None:
        super().__init__(cache)
        self.url = url
        self._store = store
        self._lock = threading.Lock()
        self._download_lock = threading.Lock()
        self._complete: dict[str, dict[int, Signature]] = {}  # model -> version -> marker's
        #: deployment.json's ETag (None: absent) and when the model was listed (monotonic)
        self._listed_etag: dict[str, tuple[str | None, float]] = {}
        self._deployments: dict[str, tuple[str, dict[str, Any]]] = {}  # ETag, parsed
        self._markers: dict[tuple[str, int], dict[str, str]] = {}  # immutable once written
        self._verified: set[tuple[str, int, str]] = set()  # cached files checked this run
        self._policies: dict[str, str | None] = {}  # policy.toml's ETag in the cache
        #: (model, version) prefix without a marker -> (first seen, last looked up), monotonic
        self._incomplete: dict[tuple[str, int], tuple[float, float]] = {}

    @property
    def location(self) -> str:
        return self.url

    # -- listing -------------------------------------------------------------------------

    def models(self) -> list[str]:
        listing = self._call("", list_dirs, self._store, None)
        return sorted(name for name in listing[0] if _valid_model(name))

    def versions(self, model: str) -> list[int]:
        """Versions of ``model`` whose COMPLETE marker exists, ascending."""
        prefixes, etag, anything = self._list_model(model)
        if not anything:
            raise ModelNotFound(f"model {model!r} is not in the repository {self.url}")
        with self._lock:
            known = self._complete.setdefault(model, {})
            for gone in set(known) - prefixes:  # deleted: a later one of that number is new
                del known[gone]
                self._markers.pop((model, gone), None)
                self._verified = {v for v in self._verified if v[:2] != (model, gone)}
            self._listed_etag[model] = (etag, time.monotonic())
            pending = self._due(model, prefixes - set(known))
        for version in pending:
            marker = self._head(f"{model}/{version}/{MARKER}")
            if marker is not None:
                with self._lock:
                    known[version] = marker
                    self._incomplete.pop((model, version), None)
        with self._lock:
            return sorted(known)

    def _due(self, model: str, incomplete: set[int]) -> list[int]:
        """Incomplete prefixes whose marker to look up now. An upload in progress is looked
        at every scan; one incomplete for ABANDONED_AFTER seconds (a writer that died) only
        every ABANDONED_CHECK seconds, so dead claims do not add a request per scan each."""
        now = time.monotonic()
        for key in [k for k in self._incomplete if k[0] == model and k[1] not in incomplete]:
            del self._incomplete[key]  # completed or deleted
        due = []
        for version in sorted(incomplete):
            first, last = self._incomplete.setdefault((model, version), (now, 0.0))
            if now - first < ABANDONED_AFTER or now - last >= ABANDONED_CHECK:
                self._incomplete[(model, version)] = (first, now)
                due.append(version)
        return due

    def next_version(self, model: str) -> int:
        prefixes, _etag, _anything = self._list_model(validate_model_name(model))
        return max(prefixes, default=0) + 1

    def signature(self, model: str, version: int) -> Signature:
        """The marker's (mtime_ns, size): a rewritten version has a new marker."""
        for attempt in range(2):
            with self._lock:
                known = self._complete.get(model, {}).get(_validate_version(version))
            if known is not None:
                return known
            if attempt == 0:
                self.versions(model)
        raise FileNotFoundError(f"{self.url}/{model}/{version}/{MARKER} does not exist")

    def _list_model(self, model: str) -> tuple[set[int], str | None, bool]:
        """Version prefixes, the ETag of deployment.json (None: absent), whether anything is
        under the model's prefix at all."""
        key = validate_model_name(model)
        dirs, objects = self._call(key, list_dirs, self._store, key)
        versions = {int(d) for d in dirs if _VERSION_PREFIX.fullmatch(d)}
        etag = objects.get("deployment.json")
        return versions, etag, bool(dirs or objects)

    # -- reading versions through the local cache ---------------------------------------

    def version_dir(self, model: str, version: int) -> Path:
        """The local copy of a complete version, every file checked against its marker."""
        return self._local(model, version, None)

    def _serving_dir(self, model: str, version: int) -> Path:
        return self._local(model, version, SERVING_FILES)

    def _local(self, model: str, version: int, names: tuple[str, ...] | None) -> Path:
        """The cache directory of a version holding ``names`` (None: all of its files)."""
        _validate_version(version)
        with self._lock:
            listed = version in self._complete.get(model, {})
        if not listed and version not in self.versions(model):
            raise ModelNotFound(f"model {model!r} has no version {version} in {self.url}")
        path = self.root / model / str(version)
        with self._download_lock:
            files = self._marker_files(model, version)
            wanted = files if names is None else {n: files[n] for n in names if n in files}
            for name, digest in wanted.items():
                if (model, version, name) not in self._verified:
                    self._fetch(model, version, name, digest, path / name)
                    self._verified.add((model, version, name))
        return path

    def _marker_files(self, model: str, version: int) -> dict[str, str]:
        with self._lock:
            known = self._markers.get((model, version))
        if known is not None:
            return known
        where = f"{self.url}/{model}/{version}/{MARKER}"
        try:
            files = json.loads(self._get(f"{model}/{version}/{MARKER}"))["files"]
            if not isinstance(files, dict) or "model.onnx" not in files:
                raise ValueError("no model.onnx in its list of files")
            for name, digest in files.items():
                if not all(_FILE_PART.fullmatch(part) for part in str(name).split("/")):
                    raise ValueError(f"file name {name!r} is not allowed")
                if not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
                    raise ValueError(f"{name}: {digest!r} is not a sha256")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptVersion(f"CorruptVersion: {where} cannot be read: {exc}") from exc
        checked = {str(name): str(digest) for name, digest in files.items()}
        with self._lock:
            self._markers[(model, version)] = checked
        return checked

    def _fetch(self, model: str, version: int, name: str, digest: str, target: Path) -> None:
        """``target`` holding the file the marker describes: a cached copy that matches its
        sha256 is kept, anything else is downloaded, checked and renamed into place."""
        if _sha256_of(target) == digest:
            return
        data = self._get(f"{model}/{version}/{name}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise CorruptVersion(
                f"CorruptVersion: {self.url}/{model}/{version}/{name} has sha256 {actual}, "
                f"its {MARKER} marker records {digest}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, target)

    # -- deployment.json: compare-and-swap on its ETag ----------------------------------

    def deployment(self, model: str) -> dict[str, Any] | None:
        """deployment.json; a scan's listing of a moment ago saves the request when it shows
        the file absent or with the ETag of the copy held."""
        with self._lock:
            cached = self._deployments.get(model)
            etag, listed_at = self._listed_etag.get(model, ("", -LISTING_FRESH))
        if time.monotonic() - listed_at < LISTING_FRESH:
            if etag is None:
                return None
            if cached is not None and etag == cached[0]:
                return copy.deepcopy(cached[1])
        return self.read_deployment(model)[0]

    def read_deployment(self, model: str) -> tuple[dict[str, Any] | None, str | None]:
        from obstore.exceptions import NotModifiedError

        key = f"{validate_model_name(model)}/deployment.json"
        with self._lock:
            cached = self._deployments.get(model)
        options = {"if_none_match": cached[0]} if cached else None
        try:
            result = self._call(key, get_with_meta, self._store, key, options)
        except NotModifiedError:
            assert cached is not None
            return copy.deepcopy(cached[1]), cached[0]
        except FileNotFoundError:
            with self._lock:
                self._deployments.pop(model, None)
            return None, None
        data, etag = result
        state = json.loads(data)
        if not isinstance(state, dict):
            raise ValueError(f"{self.url}/{key} does not hold a JSON object")
        with self._lock:
            self._deployments[model] = (etag, copy.deepcopy(state))
        return state, etag

    def replace_deployment(self, model: str, state: dict[str, Any], tag: str | None) -> None:
        """Write deployment.json only if its ETag is still ``tag`` (None: it must not exist)."""
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        key = f"{validate_model_name(model)}/deployment.json"
        mode: Any = "create" if tag is None else {"e_tag": tag}
        try:
            etag = self._call(key, put, self._store, key, _json_bytes(state), mode)
        except (AlreadyExistsError, PreconditionError) as exc:
            raise DeploymentConflict(
                f"{self.url}/{key} changed since it was read (another replica or tool wrote "
                "it); nothing was written"
            ) from exc
        with self._lock:
            self._deployments[model] = (etag, copy.deepcopy(state))

    def write_deployment(self, model: str, state: dict[str, Any]) -> None:
        """Overwrite deployment.json unconditionally (an operator's or a tool's own write)."""
        key = f"{validate_model_name(model)}/deployment.json"
        self._call(key, put, self._store, key, _json_bytes(state), "overwrite")

    def deployment_lock(self, model: str) -> Any:
        return nullcontext()  # no lock: replace_deployment is conditional

    def append_history(self, model: str, record: dict[str, Any]) -> None:
        key = f"{validate_model_name(model)}/history/{int(record['revision']):012d}.json"
        self._call(key, put, self._store, key, _json_bytes(record), "create")

    def history_records(self, model: str, limit: int) -> list[dict[str, Any]]:
        prefix = f"{validate_model_name(model)}/history"
        _dirs, objects = self._call(prefix, list_dirs, self._store, prefix)
        records: list[dict[str, Any]] = []
        for name in sorted(objects, reverse=True)[: max(limit, 0)]:
            try:
                records.append(json.loads(self._get(f"{prefix}/{name}")))
            except (FileNotFoundError, ValueError):
                continue
        return records

    # -- writing versions: claim, upload, then the marker --------------------------------

    def write_version(self, model: str, populate: Callable[[Path], None]) -> int:
        """Upload the next version of ``model``; visible only once its marker is written."""
        validate_model_name(model)
        with tempfile.TemporaryDirectory(prefix="driftgate-upload-") as name:
            tmp = Path(name)
            populate(tmp)
            if not (tmp / "model.onnx").is_file():
                raise InvalidInput(f"a version of model {model!r} must contain model.onnx")
            version = self._claim(model)
            _stamp_metadata(tmp, model, version)
            files = {}
            for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
                relative = path.relative_to(tmp).as_posix()
                if not all(_FILE_PART.fullmatch(part) for part in relative.split("/")):
                    raise InvalidInput(f"a version may not hold a file named {relative!r}")
                data = path.read_bytes()
                files[relative] = hashlib.sha256(data).hexdigest()
                key = f"{model}/{version}/{relative}"
                self._call(key, put, self._store, key, data, "overwrite")
            written = dt.datetime.now(dt.UTC).isoformat()
            marker = {"version": version, "files": files, "written_at": written}
            key = f"{model}/{version}/{MARKER}"
            self._call(key, put, self._store, key, _json_bytes(marker), "create")
            self._keep(model, version, tmp, files)
        return version

    def _keep(self, model: str, version: int, tmp: Path, files: dict[str, str]) -> None:
        """The files just uploaded become the cached copy: the writer reads them next."""
        with self._download_lock:
            for name in files:
                target = self.root / model / str(version) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(tmp / name, target)
                self._verified.add((model, version, name))
            with self._lock:
                self._markers[(model, version)] = dict(files)

    def _claim(self, model: str) -> int:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        version = self.next_version(model)
        for _ in range(_MAX_CLAIMS):
            key = f"{model}/{version}/{CLAIM}"
            try:
                self._call(key, put, self._store, key, b"", "create")
                return version
            except (AlreadyExistsError, PreconditionError):
                version += 1  # another writer holds this number
        raise FailedPrecondition(f"could not claim a version number of {model!r} in {self.url}")

    def policy_root(self, model: str) -> Path:
        """The cache, with ``<model>/policy.toml`` fetched when its ETag changed."""
        from obstore.exceptions import NotModifiedError

        key = f"{validate_model_name(model)}/policy.toml"
        target = self.root / model / "policy.toml"
        with self._lock:
            cached = self._policies.get(model)
        options = {"if_none_match": cached} if cached and target.is_file() else None
        try:
            data, etag = self._call(key, get_with_meta, self._store, key, options)
        except NotModifiedError:
            return self.root
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            return self.root
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".policy.{threading.get_ident()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, target)
        with self._lock:
            self._policies[model] = etag
        return self.root

    # -- quarantine markers, shared by every replica -------------------------------------

    def quarantine(self, model: str, version: int, reason: str) -> None:
        record = {
            "reason": reason,
            "sha256": self._model_sha256(model, version),
            "time": time.time(),
        }
        key = f"{model}/quarantine/{_validate_version(version)}.json"
        self._call(key, put, self._store, key, _json_bytes(record), "overwrite")

    def quarantined(self, model: str, version: int) -> dict[str, Any] | None:
        key = f"{validate_model_name(model)}/quarantine/{_validate_version(version)}.json"
        try:
            record = json.loads(self._get(key))
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("sha256") != self._model_sha256(
            model, version
        ):
            return None
        return record

    # -- the boundary: every call to the store goes through here ------------------------

    def _get(self, key: str) -> bytes:
        data: bytes = self._call(key, get_with_meta, self._store, key, None)[0]
        return data

    def _head(self, key: str) -> Signature | None:
        try:
            return self._call(key, head_signature, self._store, key)  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def _call(self, key: str, function: Callable[..., Any], *args: Any) -> Any:
        with translated(f"{self.url}/{key}".rstrip("/")):
            return function(*args)


def _valid_model(name: str) -> bool:
    try:
        validate_model_name(name)
    except InvalidInput:
        return False
    return True


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
