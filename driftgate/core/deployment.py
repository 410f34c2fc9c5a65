"""Deployment state of a model: what takes traffic, durable, compare-and-set, with history.

``<repository>/<model>/deployment.json`` holds the stable version, the canary
``{version, weight}``, the shadow version, the earlier stable versions (most recent first:
the rollback targets and warm standbys) and a revision number. Every change goes through
``DeploymentStore.change``, which, under an exclusive ``fcntl`` lock on
``<model>/.deployment.lock`` (so commands are serialized across threads and across gateway
processes sharing the repository):

1. reads the current state,
2. refuses a stale ``expected_revision`` with FailedPrecondition,
3. applies one pure transition (``deploy``, ``set_traffic``, ... below),
4. writes ``deployment.json`` atomically with the next revision, and
5. appends ``{time, actor, reason, action, before, after, revision}`` to
   ``<model>/history.jsonl``, fsynced.

A hand-written ``{"stable": 1}`` (a GitOps tool, an older driftgate) reads as revision 0.
This module knows nothing of gRPC; errors are ``driftgate.core.errors`` classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from driftgate.core.errors import FailedPrecondition, InvalidInput, ModelNotFound
from driftgate.core.repository import DeploymentConflict, Repository

__all__ = [
    "Canary",
    "Deployment",
    "DeploymentStore",
    "HistoryEntry",
    "deploy",
    "promote",
    "rollback",
    "set_traffic",
    "start_shadow",
    "stop_shadow",
]

#: conditional writes lost in a row before a change gives up (each loss is another's change)
MAX_CONFLICTS = 20
#: earlier stable versions remembered in deployment.json (rollback targets)
MAX_PREVIOUS = 10


@dataclass(frozen=True)
class Canary:
    version: int
    weight: float  # percent of traffic, 0..100


@dataclass(frozen=True)
class Deployment:
    """One model's deployment state; versions are repository integers, 0 means none."""

    model: str
    stable: int = 0
    canary: Canary | None = None
    shadow: int = 0
    previous: tuple[int, ...] = ()
    revision: int = 0
    updated_at: float = 0.0
    updated_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "stable": self.stable or None,
            "canary": (
                {"version": self.canary.version, "weight": self.canary.weight}
                if self.canary
                else None
            ),
            "shadow": self.shadow or None,
            "previous": list(self.previous),
            "revision": self.revision,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }

    @classmethod
    def from_json(cls, model: str, data: dict[str, Any] | None) -> Deployment:
        """Parse deployment.json leniently: a hand-written file may hold only ``stable``."""
        data = data or {}
        canary = data.get("canary") or None
        return cls(
            model=model,
            stable=_int(data.get("stable")),
            canary=(
                Canary(_int(canary.get("version")), float(canary.get("weight") or 0.0))
                if isinstance(canary, dict) and _int(canary.get("version"))
                else None
            ),
            shadow=_int(data.get("shadow")),
            previous=tuple(_int(v) for v in data.get("previous") or () if _int(v)),
            revision=_int(data.get("revision")),
            updated_at=float(data.get("updated_at") or 0.0),
            updated_by=str(data.get("updated_by") or ""),
        )

    def same_routing(self, other: Deployment) -> bool:
        return (self.stable, self.canary, self.shadow, self.previous) == (
            other.stable,
            other.canary,
            other.shadow,
            other.previous,
        )


def _int(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class HistoryEntry:
    time: float
    actor: str
    reason: str
    action: str
    before: Deployment
    after: Deployment
    revision: int = field(default=0)


# -- transitions: pure functions of the current state ---------------------------------------


def _check_weight(weight: float) -> float:
    if not (isinstance(weight, int | float) and math.isfinite(weight) and 0 <= weight <= 100):
        raise InvalidInput(f"canary weight must be a percentage from 0 to 100, got {weight!r}")
    return float(weight)


def _retire(state: Deployment, old_stable: int, new_stable: int) -> tuple[int, ...]:
    """The previous-stable list after ``new_stable`` replaces ``old_stable``."""
    earlier = (old_stable, *state.previous) if old_stable else state.previous
    kept: list[int] = []
    for version in earlier:
        if version != new_stable and version not in kept:
            kept.append(version)
    return tuple(kept[:MAX_PREVIOUS])


def deploy(state: Deployment, version: int, canary_weight: float | None = None) -> Deployment:
    """``version`` as the stable (all traffic) or, with a weight, as the canary."""
    if canary_weight is None:
        if version == state.stable and state.canary is None:
            return state
        return replace(
            state,
            stable=version,
            canary=None,
            shadow=0 if state.shadow == version else state.shadow,
            previous=_retire(state, state.stable, version),
        )
    weight = _check_weight(canary_weight)
    if version == state.stable:
        raise FailedPrecondition(
            f"version {version} of model '{state.model}' is already the stable version; "
            "a canary must be another version"
        )
    return replace(
        state,
        canary=Canary(version, weight),
        shadow=0 if state.shadow == version else state.shadow,
    )


def set_traffic(state: Deployment, canary_weight: float) -> Deployment:
    weight = _check_weight(canary_weight)
    if state.canary is None:
        raise FailedPrecondition(
            f"model '{state.model}' has no canary; deploy one first "
            "(driftgate deploy MODEL VERSION --canary PCT)"
        )
    return replace(state, canary=Canary(state.canary.version, weight))


def start_shadow(state: Deployment, version: int) -> Deployment:
    if version in (state.stable, state.canary.version if state.canary else 0):
        raise FailedPrecondition(
            f"version {version} of model '{state.model}' already takes traffic; "
            "a shadow must be another version"
        )
    return replace(state, shadow=version)


def stop_shadow(state: Deployment, version: int = 0) -> Deployment:
    if version and version != state.shadow:
        current = state.shadow or "none"
        raise FailedPrecondition(
            f"version {version} is not the shadow of model '{state.model}' (shadow: {current})"
        )
    return replace(state, shadow=0)


def promote(state: Deployment) -> Deployment:
    if state.canary is None:
        raise FailedPrecondition(f"model '{state.model}' has no canary to promote")
    new = state.canary.version
    return replace(state, stable=new, canary=None, previous=_retire(state, state.stable, new))


def rollback(state: Deployment, version: int | None = None) -> Deployment:
    """Drop the canary, or go back to the previous stable, or to ``version``."""
    if version is not None:
        if version == state.stable and state.canary is None:
            return state
        previous = tuple(v for v in state.previous if v != version)
        if state.stable and state.stable != version:
            # The version rolled back from is not a rollback target any more.
            previous = tuple(v for v in previous if v != state.stable)
        return replace(state, stable=version, canary=None, previous=previous[:MAX_PREVIOUS])
    if state.canary is not None:
        return replace(state, canary=None)
    if not state.previous:
        raise FailedPrecondition(
            f"model '{state.model}' has no canary and no previous stable version to roll "
            "back to; name one with --to VERSION"
        )
    return replace(state, stable=state.previous[0], previous=state.previous[1:])


def versions_named(state: Deployment) -> set[int]:
    """Versions a state routes traffic to (or mirrors traffic to)."""
    named = {state.stable, state.shadow, state.canary.version if state.canary else 0}
    named.discard(0)
    return named


# -- the store ------------------------------------------------------------------------------

Transition = Callable[[Deployment], Deployment]


class DeploymentStore:
    """Reads and changes deployment state in a repository. Blocking: call it off the loop.

    Usage: ``store.change("iris", "Promote", promote, expected_revision=4, actor="ci",
    reason="canary healthy")``.
    """

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def read(self, model: str) -> Deployment:
        self.repository.versions(model)  # NOT_FOUND for an unknown model
        state = Deployment.from_json(model, self.repository.deployment(model))
        return state

    def change(
        self,
        model: str,
        action: str,
        transition: Transition,
        *,
        expected_revision: int | None = None,
        actor: str = "",
        reason: str = "",
    ) -> tuple[Deployment, bool]:
        """Apply ``transition``; returns (the state now, whether it changed).

        A conditional write that lost to another writer (an object store has no lock) is
        retried from a fresh read: the revision check and the transition see its change.
        """
        for _ in range(MAX_CONFLICTS):
            with self.repository.deployment_lock(model):
                try:
                    return self._change_once(
                        model, action, transition, expected_revision, actor, reason
                    )
                except DeploymentConflict:
                    continue
        raise FailedPrecondition(
            f"model '{model}': deployment.json in {self.repository.location} changed under "
            f"{MAX_CONFLICTS} attempts in a row; retry"
        )

    def _change_once(
        self,
        model: str,
        action: str,
        transition: Transition,
        expected_revision: int | None,
        actor: str,
        reason: str,
    ) -> tuple[Deployment, bool]:
        on_disk = self.repository.versions(model)
        data, tag = self.repository.read_deployment(model)
        before = Deployment.from_json(model, data)
        implicit = not before.stable
        if implicit and on_disk:
            # Without a recorded stable, the highest version serves (as in Triton).
            before = replace(before, stable=max(on_disk))
        if expected_revision is not None and expected_revision != before.revision:
            raise FailedPrecondition(
                f"model '{model}' is at revision {before.revision}, not the expected "
                f"revision {expected_revision}; read the status and retry"
            )
        after = transition(before)
        for version in sorted(versions_named(after) - versions_named(before)):
            if version not in on_disk:
                have = ", ".join(map(str, on_disk)) or "none"
                raise ModelNotFound(
                    f"model '{model}' has no version {version} in the repository (versions: {have})"
                )
        # Deploying the implicit stable as the stable records it (pins it), so that a
        # newer version written later does not take over by being the highest.
        pins = implicit and action == "Deploy" and after.stable and after.canary is None
        if after.same_routing(before) and not pins:
            return before, False
        after = replace(
            after, revision=before.revision + 1, updated_at=time.time(), updated_by=actor
        )
        self.repository.replace_deployment(model, after.to_json(), tag)
        self._append_history(
            model, HistoryEntry(after.updated_at, actor, reason, action, before, after)
        )
        return after, True

    def history(self, model: str, limit: int = 100) -> list[HistoryEntry]:
        """Changes of ``model``, newest first."""
        self.repository.versions(model)
        entries: list[HistoryEntry] = []
        for raw in self.repository.history_records(model, limit):
            if not isinstance(raw, dict):
                continue
            entries.append(
                HistoryEntry(
                    time=float(raw.get("time", 0.0)),
                    actor=str(raw.get("actor", "")),
                    reason=str(raw.get("reason", "")),
                    action=str(raw.get("action", "")),
                    before=Deployment.from_json(model, raw.get("before")),
                    after=Deployment.from_json(model, raw.get("after")),
                    revision=_int(raw.get("revision")),
                )
            )
        return entries

    def _append_history(self, model: str, entry: HistoryEntry) -> None:
        record = {
            "time": entry.time,
            "actor": entry.actor,
            "reason": entry.reason,
            "action": entry.action,
            "before": entry.before.to_json(),
            "after": entry.after.to_json(),
            "revision": entry.after.revision,
        }
        self.repository.append_history(model, record)
