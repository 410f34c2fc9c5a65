"""The model repository on disk, shared by the gateway, the converter and the monitor.

Layout::

    <root>/<model>/deployment.json     written atomically by ``write_deployment``
    <root>/<model>/<version>/model.onnx
                            model.json      (optional: synthesised from the graph if absent)
                            reference.json  (optional)
    <root>/<model>/.tmp-*               a version being written; ignored by every reader
    <root>/<model>/quarantine/<v>.json  a version that hung or crashed onnxruntime
                                        (``quarantine``): not loaded again until rewritten

A version is an integer directory holding ``model.onnx``; it is immutable once written.
``write_version`` populates a hidden temporary directory inside the model directory, fsyncs
it, and renames it to the next free number, so a reader sees a whole version or none, and two
writers racing for the same number both succeed with distinct numbers. A Triton-style
directory (``<model>/<version>/model.onnx``, with or without ``config.pbtxt``) loads too.

This module imports neither scikit-learn nor onnxruntime; ``onnx`` is imported only to
synthesise metadata for a version without ``model.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from driftgate.core.errors import FailedPrecondition, InvalidInput, ModelNotFound, quote

__all__ = [
    "CorruptVersion",
    "DeploymentConflict",
    "QUARANTINE_DIR",
    "Repository",
    "TEMP_PREFIX",
    "V2_DATATYPES",
    "tensor_schema",
    "validate_model_name",
]

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_VERSION = re.compile(r"0|[1-9][0-9]*")
TEMP_PREFIX = ".tmp-"
QUARANTINE_DIR = "quarantine"
STALE_TEMP_SECONDS = 3600.0
_MAX_RENAME_ATTEMPTS = 1000

# ONNX TensorProto element types -> KServe v2 datatype names.
V2_DATATYPES = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
    16: "BF16",
}


class CorruptVersion(FailedPrecondition):
    """A version's ``model.onnx`` does not match the sha256 recorded in its ``model.json``."""


class DeploymentConflict(FailedPrecondition):
    """``deployment.json`` changed between its read and a conditional write of it."""


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise InvalidInput.

    Checked before any file-system access, so traversal such as ``../x`` never reaches a path.
    """
    if not isinstance(name, str) or _MODEL_NAME.fullmatch(name) is None:
        shown = quote(name if isinstance(name, str) else repr(name))
        raise InvalidInput(f"invalid model name {shown}: expected {MODEL_NAME_PATTERN}")
    return name


def _validate_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidInput(f"invalid model version {version!r}: expected an integer >= 0")
    return version


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False) + "\n").encode("utf-8")


class Repository:
    """A model repository rooted at ``root``; see the module docstring for the layout.

    Usage: ``Repository(Path("models")).metadata("iris", 3)``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        """Where the repository is, as an operator names it (a directory or a URL)."""
        return str(self.root)

    def _model_dir(self, model: str) -> Path:
        return self.root / validate_model_name(model)

    def _existing_model_dir(self, model: str) -> Path:
        path = self._model_dir(model)
        if not path.is_dir():
            raise ModelNotFound(f"model {model!r} is not in the repository {self.root}")
        return path

    def models(self) -> list[str]:
        """Names of the model directories, sorted; hidden and invalid names are skipped."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and _MODEL_NAME.fullmatch(entry.name)
        )

    def versions(self, model: str) -> list[int]:
        """Complete versions of ``model`` (integer directories holding model.onnx), ascending."""
        path = self._existing_model_dir(model)
        return sorted(
            int(entry.name)
            for entry in path.iterdir()
            if _VERSION.fullmatch(entry.name) and (entry / "model.onnx").is_file()
        )

    def next_version(self, model: str) -> int:
        """One more than the highest integer directory of ``model`` (1 for a new model)."""
        path = self._model_dir(model)
        if not path.is_dir():
            return 1
        numbers = [int(e.name) for e in path.iterdir() if _VERSION.fullmatch(e.name)]
        return max(numbers, default=0) + 1

    def version_dir(self, model: str, version: int) -> Path:
        """The directory of a complete version; ModelNotFound if there is none."""
        path = self._existing_model_dir(model) / str(_validate_version(version))
        if not (path / "model.onnx").is_file():
            raise ModelNotFound(f"model {model!r} has no version {version}")
        return path

    def _serving_dir(self, model: str, version: int) -> Path:
        """The directory holding a version's model.onnx, model.json and reference.json (an
        object store's cache fetches only these: serving never needs the estimator)."""
        return self.version_dir(model, version)

    def metadata(self, model: str, version: int) -> dict[str, Any]:
        """``model.json`` of a version, or metadata synthesised from its ONNX graph."""
        path = self._serving_dir(model, version)
        meta_path = path / "model.json"
        if meta_path.is_file():
            meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
            return meta
        return _synthesise_metadata(model, version, path / "model.onnx")

    def reference(self, model: str, version: int) -> dict[str, Any] | None:
        """``reference.json`` of a version, or None when the version has no profile."""
        path = self._serving_dir(model, version) / "reference.json"
        if not path.is_file():
            return None
        reference: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return reference

    def read_model_bytes(self, model: str, version: int) -> bytes:
        """The bytes of ``model.onnx``, checked against the sha256 in ``model.json`` if any."""
        path = self._serving_dir(model, version)
        data = (path / "model.onnx").read_bytes()
        meta_path = path / "model.json"
        if meta_path.is_file():
            expected = json.loads(meta_path.read_text(encoding="utf-8")).get("sha256")
            actual = hashlib.sha256(data).hexdigest()
            if expected is not None and expected != actual:
                raise CorruptVersion(
                    f"CorruptVersion: model {model!r} version {version}: model.onnx has sha256 "
                    f"{actual}, model.json records {expected}"
                )
        return data

    def quarantine(self, model: str, version: int, reason: str) -> None:
        """Mark a version that hung or crashed onnxruntime (``<model>/quarantine/<v>.json``,
        written atomically with the sha256 of its model.onnx): no gateway loads it again
        until it is rewritten (another sha256) or the marker is deleted."""
        directory = self._existing_model_dir(model) / QUARANTINE_DIR
        directory.mkdir(exist_ok=True)
        record = {
            "reason": reason,
            "sha256": self._model_sha256(model, version),
            "time": time.time(),
        }
        tmp = directory / f".{_validate_version(version)}.{os.getpid()}.tmp"
        _write_file_synced(tmp, _json_bytes(record))
        os.replace(tmp, directory / f"{version}.json")
        _fsync_dir(directory)

    def quarantined(self, model: str, version: int) -> dict[str, Any] | None:
        """The quarantine record of a version, or None (none, or written for other bytes)."""
        path = (
            self._existing_model_dir(model) / QUARANTINE_DIR / f"{_validate_version(version)}.json"
        )
        try:
            record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        if record.get("sha256") != self._model_sha256(model, version):
            return None
        return record

    def _model_sha256(self, model: str, version: int) -> str:
        path = self._serving_dir(model, version)
        meta_path = path / "model.json"
        if meta_path.is_file():
            recorded = json.loads(meta_path.read_text(encoding="utf-8")).get("sha256")
            if isinstance(recorded, str):
                return recorded
        return hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()

    def deployment(self, model: str) -> dict[str, Any] | None:
        """``deployment.json`` of ``model``, or None if no deployment was recorded."""
        path = self._existing_model_dir(model) / "deployment.json"
        if not path.is_file():
            return None
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return state

    def write_deployment(self, model: str, state: dict[str, Any]) -> None:
        """Replace ``deployment.json`` atomically: temp file, fsync, os.replace, fsync dir."""
        directory = self._existing_model_dir(model)
        fd, tmp_name = tempfile.mkstemp(prefix=".deployment.", suffix=".tmp", dir=directory)
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it 0600
            with os.fdopen(fd, "wb") as handle:
                handle.write(_json_bytes(state))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, directory / "deployment.json")
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(directory)

    # -- compare-and-swap of deployment.json, and its history ------------------------------
    # Locally a lock file serializes writers and the tag is unused; an object store has no
    # lock, so ``replace_deployment`` is a conditional write against the tag read.

    @contextlib.contextmanager
    def deployment_lock(self, model: str) -> Iterator[None]:
        """Held around read, transition and write of ``deployment.json`` (across processes)."""
        path = self._existing_model_dir(model) / ".deployment.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def read_deployment(self, model: str) -> tuple[dict[str, Any] | None, str | None]:
        """``deployment.json`` and the tag to pass to ``replace_deployment``."""
        return self.deployment(model), None

    def replace_deployment(self, model: str, state: dict[str, Any], tag: str | None) -> None:
        """Write ``deployment.json`` if it is still as read with ``tag``, else raise
        DeploymentConflict. Here the caller holds ``deployment_lock``: nobody else wrote."""
        self.write_deployment(model, state)

    def append_history(self, model: str, record: dict[str, Any]) -> None:
        """Append one change to ``<model>/history.jsonl``, fsynced."""
        path = self._existing_model_dir(model) / "history.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def history_records(self, model: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` changes, newest first; a torn line (a crash mid-append) is
        skipped."""
        path = self._existing_model_dir(model) / "history.jsonl"
        if not path.is_file():
            return []
        records: list[dict[str, Any]] = []
        for line in reversed(path.read_text(encoding="utf-8").splitlines()):
            if len(records) >= limit:
                break
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def policy_root(self, model: str) -> Path:
        """A directory whose ``<model>/policy.toml`` is the model's policy file, if it has one."""
        return self.root

    def signature(self, model: str, version: int) -> tuple[tuple[int, int], ...]:
        """(mtime_ns, size) of model.onnx and model.json (absent: (0, 0)); a changed
        signature means rewritten files. Raises OSError when model.onnx cannot be read."""
        folder = self._model_dir(model) / str(_validate_version(version))
        stats = []
        for filename in ("model.onnx", "model.json"):
            try:
                st = (folder / filename).stat()
            except FileNotFoundError:
                if filename == "model.onnx":
                    raise
                stats.append((0, 0))
                continue
            stats.append((st.st_mtime_ns, st.st_size))
        return tuple(stats)

    def write_version(self, model: str, populate: Callable[[Path], None]) -> int:
        """Write the next version of ``model`` atomically and return its number.

        ``populate(tmp_dir)`` writes the files (at least ``model.onnx``) into a hidden
        temporary directory; the repository stamps ``name`` and ``version`` into its
        ``model.json``, fsyncs everything and renames the directory to the next free number.
        If ``populate`` raises, the temporary directory is removed and nothing is visible.
        """
        directory = self._model_dir(model)
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            _fsync_dir(directory.parent)
        self._remove_stale_temps(directory)
        tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=directory))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it 0700; a version must be readable by the gateway
            populate(tmp)
            if not (tmp / "model.onnx").is_file():
                raise InvalidInput(f"a version of model {model!r} must contain model.onnx")
            version = self._rename_to_next(model, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(directory)
        return version

    def _rename_to_next(self, model: str, tmp: Path) -> int:
        for _ in range(_MAX_RENAME_ATTEMPTS):
            version = self.next_version(model)
            _stamp_metadata(tmp, model, version)
            _fsync_tree(tmp)
            try:
                os.rename(tmp, tmp.parent / str(version))
            except OSError as exc:
                # Another writer took this number first: try the next one.
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise
            return version
        raise FailedPrecondition(f"could not find a free version number for model {model!r}")

    @staticmethod
    def _remove_stale_temps(directory: Path) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        for entry in directory.iterdir():
            if entry.name.startswith(TEMP_PREFIX) and entry.is_dir():
                try:
                    if entry.stat().st_mtime < cutoff:
                        shutil.rmtree(entry, ignore_errors=True)
                except FileNotFoundError:
                    continue


def _stamp_metadata(tmp: Path, model: str, version: int) -> None:
    meta_path = tmp / "model.json"
    if not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["name"] = model
    meta["version"] = version
    _write_file_synced(meta_path, _json_bytes(meta))


def tensor_schema(value_info: Any, drop_batch: bool = True) -> dict[str, Any]:
    """``{name, datatype, shape}`` of an ONNX ValueInfoProto, v2 datatype, -1 if unknown."""
    tensor = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    if drop_batch and dims:
        dims = dims[1:]
    return {
        "name": value_info.name,
        "datatype": V2_DATATYPES.get(tensor.elem_type, f"ONNX_TYPE_{tensor.elem_type}"),
        "shape": dims,
    }


@functools.cache
def _model_header() -> Any:
    """A message class that reads only what metadata needs from an ONNX ``ModelProto``.

    It declares the model's ``opset_import`` and ``graph`` and, of the graph, ``input``,
    ``output`` and the initializers' names, with ONNX's own field numbers; protobuf skips the
    rest (the nodes and the weights) without building them. Reading a 730 KB forest this way
    takes about 0.6 ms against 5-6 ms for the whole model, time during which the parsing
    thread holds the GIL and a serving event loop waits for it.
    """
    import onnx  # registers ONNX's messages in protobuf's default pool
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    package = "driftgate.onnx_header"
    value_info = onnx.ValueInfoProto.DESCRIPTOR
    header = descriptor_pb2.FileDescriptorProto(
        name="driftgate/onnx_header.proto",
        package=package,
        syntax="proto2",
        dependency=[value_info.file.name],
    )

    one, many = field.LABEL_OPTIONAL, field.LABEL_REPEATED

    def add(message: Any, name: str, number: int, label: int, type_name: str = "") -> None:
        """A field of ``type_name``'s messages, or a string without one."""
        added = message.field.add(name=name, number=number, label=label, type=field.TYPE_STRING)
        if type_name:
            added.type, added.type_name = field.TYPE_MESSAGE, type_name

    add(header.message_type.add(name="TensorName"), "name", 8, one)
    graph = header.message_type.add(name="GraphHeader")
    add(graph, "initializer", 5, many, f".{package}.TensorName")
    add(graph, "input", 11, many, f".{value_info.full_name}")
    add(graph, "output", 12, many, f".{value_info.full_name}")
    model = header.message_type.add(name="ModelHeader")
    add(model, "opset_import", 8, many, f".{onnx.OperatorSetIdProto.DESCRIPTOR.full_name}")
    add(model, "graph", 7, one, f".{package}.GraphHeader")
    pool = descriptor_pool.Default()
    pool.Add(header)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.ModelHeader"))


def _synthesise_metadata(model: str, version: int, onnx_path: Path) -> dict[str, Any]:
    """Metadata for a Triton-style version: the schema read from the graph's header.

    The leading dimension of every input and output is taken as the batch dimension and
    dropped from ``shape``; ``task`` and ``class_labels`` are unknown (None).
    """
    import onnx

    data = onnx_path.read_bytes()
    graph_model = _model_header().FromString(data)
    graph = graph_model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [tensor_schema(v, True) for v in graph.input if v.name not in initializers]
    for schema in inputs:
        width = schema["shape"][-1] if schema["shape"] else 1
        count = width if width > 0 else 0
        schema["features"] = [f"{schema['name']}[{i}]" for i in range(count)]
    opset = next((o.version for o in graph_model.opset_import if o.domain in ("", "ai.onnx")), None)
    mtime = dt.datetime.fromtimestamp(onnx_path.stat().st_mtime, tz=dt.UTC)
    return {
        "name": model,
        "version": version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "created_at": mtime.isoformat(),
        "task": None,
        "estimator": None,
        "libraries": {"onnx": onnx.__version__},
        "opset": opset,
        "inputs": inputs,
        "outputs": [tensor_schema(v, True) for v in graph.output],
        "class_labels": None,
        "parity": None,
        "training_data": None,
        "holdout_metrics": None,
        "synthesised": True,
    }
