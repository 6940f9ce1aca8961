"""Items read by ``upload`` to body bytes: each checked against the mode, then encoded by the codec.

The wire form of an entry is the codec's (:func:`_codec.action_entry` / :func:`_codec.member_entry`);
this module only decides what an item means in a mode. Pieces are complete JSON values joined by
commas: no bytes are ever spliced inside a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import orjson

from .._codec import action_entry, id_entries_json, ids_json, member_entry
from .._errors import ValidationError
from .._models import Action, IdAction, Member, all_valid_ids, check_id
from ._chunking import MIXED, PLAIN_ADDS, REMOVES
from ._reports import UploadMode

__all__ = ["MODES", "EncodedBatch", "check_item", "encode_batch"]

MODES: Final = ("add", "remove", "update", "replace")
#: The kind of an empty batch (see ``_chunking``): it combines with any other.
NO_KIND: Final = -1


@attrs.define
class EncodedBatch:
    """A batch of items as body bytes: ``piece`` (entries joined by commas, no brackets; empty
    when no item was valid), the valid items' IDs, and their ordering kind."""

    piece: bytes
    ids: list[str]
    kind: int


def _meaning(item: object, mode: UploadMode) -> tuple[str, bool, Mapping[str, Any] | None]:
    """What ``item`` does in ``mode``: ``(id, is an add, attributes)``; ValidationError if it does
    not fit the mode."""
    if isinstance(item, Member):
        if mode == "remove":
            if item.attributes:
                raise ValidationError("attributes", "a remove takes no attributes (mode 'remove')")
            return item.id, False, None
        return item.id, True, item.attributes
    if isinstance(item, IdAction):
        add = item.action is Action.ADD
        if mode in ("add", "replace") and not add:
            raise ValidationError("action", f"mode {mode!r} takes adds only, got a remove of {item.id!r}")
        if mode == "remove" and add:
            raise ValidationError("action", f"mode 'remove' takes removes only, got an add of {item.id!r}")
        return item.id, add, item.attributes
    if isinstance(item, str):
        return str(check_id(item)), mode != "remove", None
    raise ValidationError("item", f"must be a str ID, a Member or an IdAction, got {type(item).__name__}")


def check_item(item: object, mode: str) -> None:
    """Raise the :class:`ValidationError` ``upload`` would report for ``item`` in ``mode``, if any:
    the engine's rule, for callers that check items before streaming them (the CLI)."""
    _meaning(item, mode)  # type: ignore[arg-type]


def _combine(kind: int, this: int) -> int:
    return this if kind in (NO_KIND, this) else MIXED


def encode_batch(
    batch: list[Any],
    mode: UploadMode,
    member: bool,
    start: int,
    invalid: Callable[[int, object, ValidationError], None],
) -> EncodedBatch:
    """Check and encode ``batch`` (items at positions ``start``…) for ``mode``; ``member``: for a
    ``/replace`` body (entries without ``action``). Each invalid item goes to ``invalid`` and is
    left out."""
    if batch and list(map(type, batch)).count(str) == len(batch):
        # The common case, plain str IDs: checked and encoded by passes in C over the batch, no
        # Python step per ID. An ID that fails (or that UTF-8 cannot carry) is found item by
        # item below. ``batch`` is the caller's to hand over: it is not copied.
        array = ids_json(batch)
        if array is not None and all_valid_ids(batch, array):
            action = None if member else ("remove" if mode == "remove" else "add")
            return EncodedBatch(
                id_entries_json(batch, action, array), batch, REMOVES if mode == "remove" else PLAIN_ADDS
            )
    pieces: list[bytes] = []
    ids: list[str] = []
    kind = NO_KIND
    for offset, item in enumerate(batch):
        try:
            custom_id, add, attributes = _meaning(item, mode)
            entry = member_entry(custom_id, attributes) if member else (
                action_entry(custom_id, add, attributes)
            )
            piece = orjson.dumps(entry)
        except ValidationError as error:
            invalid(start + offset, item, error)
            continue
        except orjson.JSONEncodeError as error:
            invalid(start + offset, item, ValidationError("item", f"cannot be encoded as JSON: {error}"))
            continue
        pieces.append(piece)
        ids.append(custom_id)
        if kind != MIXED:
            kind = MIXED if attributes else _combine(kind, PLAIN_ADDS if add else REMOVES)
    return EncodedBatch(b",".join(pieces), ids, kind)
