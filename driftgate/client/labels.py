"""Ground-truth labels for earlier predictions, by the request id of the prediction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftgate.core._proto.driftgate.feedback.v1 import feedback_pb2 as fb

__all__ = ["MAX_LABELS_PER_CALL", "Label", "LabelReceipt", "label_requests"]

#: labels per SendLabels call; larger batches are split (the servers refuse more)
MAX_LABELS_PER_CALL = 10_000

LabelValue = str | int | float | bool | np.generic


@dataclass(frozen=True)
class Label:
    """The true outcome of the prediction answered to ``request_id``.

    Classifiers: the class label as the model spells it (``str`` or ``int``); regressors: a
    ``float``. ``time`` is when the outcome was observed (default: when it is received)."""

    request_id: str
    value: LabelValue
    model: str = ""
    time: dt.datetime | None = None


@dataclass(frozen=True)
class LabelReceipt:
    """What became of the labels: ``accepted`` joined a prediction, ``duplicates`` came after
    a first label of the same prediction, ``unknown`` wait for their prediction (held until
    it arrives). A gateway forwards labels to its monitor and counts them all as accepted."""

    accepted: int = 0
    duplicates: int = 0
    unknown: int = 0

    def __add__(self, other: LabelReceipt) -> LabelReceipt:
        return LabelReceipt(
            self.accepted + other.accepted,
            self.duplicates + other.duplicates,
            self.unknown + other.unknown,
        )


def _message(label: Label, model: str) -> Any:
    value = label.value.item() if isinstance(label.value, np.generic) else label.value
    message = fb.Label(request_id=label.request_id, model=label.model or model)
    if isinstance(value, str):
        message.string_value = value
    elif isinstance(value, bool | int):
        message.int64_value = int(value)
    else:
        message.double_value = float(value)
    if label.time is not None:
        message.time.FromDatetime(label.time.astimezone(dt.UTC))
    return message


def label_requests(labels: Mapping[str, LabelValue] | Iterable[Label], model: str) -> list[Any]:
    """``SendLabelsRequest`` messages of at most ``MAX_LABELS_PER_CALL`` labels each."""
    if isinstance(labels, Mapping):
        items = [Label(request_id, value) for request_id, value in labels.items()]
    else:
        items = list(labels)
    messages = [_message(label, model) for label in items]
    return [
        fb.SendLabelsRequest(labels=messages[i : i + MAX_LABELS_PER_CALL])
        for i in range(0, len(messages), MAX_LABELS_PER_CALL)
    ]


def receipt(response: Any) -> LabelReceipt:
    return LabelReceipt(response.accepted, response.duplicates, response.unknown)
