"""Audiences in memory, and the indexing model that makes write ordering observable.

Every accepted write gets an indexing token and an ``apply_at`` time (received + delay; a replace
uses a longer delay). Content only changes when a write is applied, and pending writes are applied
in ``apply_at`` order (ties by arrival), lazily, whenever a request arrives or state is read. So an
update sent while a replace is still in progress is applied first and then wiped by the replace:
exactly the hazard the API reference warns about, made visible to tests.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Final

from ._errors import ApiError
from ._models import EmulatedAudience
from ._validation import NAME_RE, UpdateItems, encode_cursor

#: A member's attributes as stored: ``None`` stands for none (``{}`` to the outside). A dict whose
#: values are all ``None`` and whose keys are strings is one the garbage collector does not track,
#: so an audience of millions of IDs without attributes costs no time in its full collections
#: (which a dict of a million ``{}`` does: about 0.1 s each, dozens of times in one big upload).
Stored = dict[str, "dict[str, object] | None"]


def _outside(members: Stored) -> dict[str, dict[str, object]]:
    """The members as the helpers give them: a fresh ``{}`` for each member without attributes."""
    return {custom_id: {} if attributes is None else attributes for custom_id, attributes in members.items()}

IN_PROGRESS = "IN_PROGRESS"
APPLIED = "APPLIED"
REPLACED = "REPLACED"

#: How a create of a taken name is answered, by mode: always a 400 (a status Batch documents for
#: create), with a code and message that speak of existence ("explicit"), of a name "already
#: used" without the word ("vague"), or of nothing at all ("opaque"). Batch documents none of
#: them, so a client must decide by state, whatever the wording.
TAKEN_NAME_REPLIES: Final = {
    "explicit": ("AUDIENCE_ALREADY_EXISTS", "an audience named {name!r} already exists"),
    "vague": ("INVALID_PARAMETER", "This name is already used"),
    "opaque": ("E4012", "Request rejected"),
}


@dataclass(eq=False)
class _Write:
    """One accepted write. ``payload`` is None (create), update items, or the replace's members."""

    token: str
    audience: _Audience
    payload: UpdateItems | Stored | None
    nominal_time: datetime  # wall-clock time the indexing completes, for ``updated``
    applied_order: int | None = None  # global application counter, None while IN_PROGRESS


@dataclass(eq=False)
class _Audience:
    name: str
    display_name: str | None
    created: datetime
    updated: datetime
    members: Stored = field(default_factory=dict)
    tokens: dict[str, _Write] = field(default_factory=dict)
    last_token: str | None = None
    pending: int = 0
    # applied_order of the last applied replace: every write applied before it is REPLACED.
    last_replace_order: int = -1
    alive: bool = True

    def state_of(self, write: _Write) -> str:
        if write.applied_order is None:
            return IN_PROGRESS
        return REPLACED if write.applied_order < self.last_replace_order else APPLIED


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, whole seconds, with a ``Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(name: str) -> ApiError:
    return ApiError(404, "AUDIENCE_NOT_FOUND", f"no audience named {name!r} in this project")


class AudienceStore:
    """The emulated project's audiences. Every method takes the lock: tests read from other threads."""

    def __init__(
        self,
        indexing_delay: float,
        replace_indexing_delay: float,
        clock: Callable[[], float] = time.monotonic,
        attribute_merge: str = "replace",
    ) -> None:
        self.indexing_delay = indexing_delay
        # How an add of an ID already present treats its attributes; Batch does not document it.
        self.attribute_merge = attribute_merge
        self.replace_indexing_delay = replace_indexing_delay
        self.taken_name = "explicit"  # a key of TAKEN_NAME_REPLIES
        self._clock = clock
        self._lock = threading.RLock()
        self._audiences: dict[str, _Audience] = {}
        self._names: list[str] = []  # kept sorted for list's cursors (bisect, no per-request sort)
        self._pending: list[tuple[float, int, _Write]] = []  # heap by (apply_at, arrival)
        self._arrivals = itertools.count()
        self._applications = itertools.count()

    # -- indexing -----------------------------------------------------------------------------

    def apply_due(self) -> None:
        """Apply every pending write whose indexing time has come."""
        with self._lock:
            self._apply_until(self._clock())

    def settle(self) -> None:
        """Apply every pending write now, in the order their indexing would complete."""
        with self._lock:
            self._apply_until(float("inf"))

    def _apply_until(self, now: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, write = heapq.heappop(pending)
            audience = write.audience
            if not audience.alive:  # removed meanwhile: its pending writes are discarded
                continue
            audience.pending -= 1
            order = next(self._applications)
            write.applied_order = order
            payload = write.payload
            if isinstance(payload, dict):  # replace: the request's members become the content
                audience.members = payload
                audience.last_replace_order = order
            elif payload is not None:  # update: in request order, so the last action per ID wins
                members = audience.members
                ids, values = payload
                if not any(values) and None not in values and self.attribute_merge == "replace":
                    # Only adds, none with attributes (a bulk upload's usual request): one
                    # update of the dict, not a step of Python per ID.
                    members.update(dict.fromkeys(ids))
                elif self.attribute_merge == "merge":
                    for custom_id, attributes in zip(ids, values, strict=True):
                        if attributes is None:
                            members.pop(custom_id, None)
                        else:
                            before = members.get(custom_id)
                            merged = attributes if before is None else {**before, **attributes}
                            members[custom_id] = merged or None
                else:
                    for custom_id, attributes in zip(ids, values, strict=True):
                        if attributes is None:
                            members.pop(custom_id, None)
                        else:
                            members[custom_id] = attributes or None
            audience.updated = max(audience.updated, min(write.nominal_time, _utc_now()))
            write.payload = None  # the content now lives in the audience; free the request's copy

    def _accept(
        self,
        audience: _Audience,
        payload: UpdateItems | Stored | None,
        delay: float,
        received: datetime,
    ) -> str:
        token = uuid.uuid4().hex
        write = _Write(token, audience, payload, received + timedelta(seconds=delay))
        audience.tokens[token] = write
        audience.last_token = token
        audience.pending += 1
        heapq.heappush(self._pending, (self._clock() + delay, next(self._arrivals), write))
        return token

    # -- writes (the API routes) ----------------------------------------------------------------

    def create(self, name: str, display_name: str | None) -> str:
        """Create an empty audience; it exists at once, its token is applied after the delay."""
        with self._lock:
            self._apply_until(self._clock())
            if name in self._audiences:
                code, message = TAKEN_NAME_REPLIES[self.taken_name]
                raise ApiError(400, code, message.format(name=name))
            now = _utc_now()
            audience = _Audience(name, display_name, now, now)
            self._insert(audience)
            return self._accept(audience, None, self.indexing_delay, now)

    def update(self, name: str, items: UpdateItems) -> str:
        """Queue adds/removes; they change the content when the write is applied."""
        with self._lock:
            audience = self._get(name)
            return self._accept(audience, items, self.indexing_delay, _utc_now())

    def replace(self, name: str, members: Stored) -> str:
        """Queue a replace (with the longer replace delay)."""
        with self._lock:
            audience = self._get(name)
            return self._accept(audience, members, self.replace_indexing_delay, _utc_now())

    def remove(self, name: str) -> str:
        """Delete the audience at once, discarding its pending writes; returns a token all the same."""
        with self._lock:
            audience = self._get(name)
            audience.alive = False
            del self._audiences[name]
            del self._names[bisect.bisect_left(self._names, name)]
            return uuid.uuid4().hex

    # -- reads (the API routes) ------------------------------------------------------------------

    def view(self, name: str, token: str | None) -> dict[str, object]:
        """The view route's object."""
        with self._lock:
            audience = self._get(name)
            if token is not None and token not in audience.tokens:
                raise ApiError(
                    404, "INDEXING_TOKEN_NOT_FOUND", f"audience {name!r} has no indexing token {token!r}"
                )
            return self._view(audience, token)

    def list_page(self, after: str | None, limit: int, first_page: bool) -> dict[str, object]:
        """One page of the list route, names in order, starting after the cursor's name."""
        with self._lock:
            self._apply_until(self._clock())
            names = self._names
            start = 0 if after is None else bisect.bisect_right(names, after)
            page = names[start:start + limit]
            has_more = start + limit < len(names)
            result: dict[str, object] = {
                "audiences": [self._view(self._audiences[n], None) for n in page],
                "has_more": has_more,
            }
            if has_more:
                result["next_from"] = encode_cursor(page[-1])
            if first_page:
                result["count"] = len(names)
            return result

    def _view(self, audience: _Audience, token: str | None) -> dict[str, object]:
        if token is None:
            token = audience.last_token
        state = APPLIED if token is None else audience.state_of(audience.tokens[token])
        view: dict[str, object] = {"name": audience.name}
        if audience.display_name is not None:
            view["display_name"] = audience.display_name
        view.update(
            type="CUSTOM_ID",
            nb_ids=len(audience.members),
            indexing_state=state,
            created=format_time(audience.created),
            updated=format_time(audience.updated),
        )
        return view

    def _get(self, name: str) -> _Audience:
        self._apply_until(self._clock())
        audience = self._audiences.get(name)
        if audience is None:
            raise _not_found(name)
        return audience

    def _insert(self, audience: _Audience) -> None:
        self._audiences[audience.name] = audience
        bisect.insort(self._names, audience.name)

    # -- test helpers ----------------------------------------------------------------------------

    def snapshot(self, name: str) -> EmulatedAudience | None:
        """A copy of one audience's applied state, or None."""
        with self._lock:
            self._apply_until(self._clock())
            audience = self._audiences.get(name)
            if audience is None:
                return None
            return EmulatedAudience(
                name=audience.name,
                display_name=audience.display_name,
                type="custom_ids",
                members=_outside(audience.members),
                created=audience.created,
                updated=audience.updated,
                tokens={t: audience.state_of(w) for t, w in audience.tokens.items()},
                last_token=audience.last_token,
                pending_writes=audience.pending,
            )

    def members(self, name: str) -> dict[str, dict[str, object]]:
        """A copy of the applied members; LookupError if the audience does not exist."""
        with self._lock:
            self._apply_until(self._clock())
            audience = self._audiences.get(name)
            if audience is None:
                known = ", ".join(repr(n) for n in self._names[:10]) or "none"
                raise LookupError(f"the emulator has no audience named {name!r} (audiences: {known})")
            return _outside(audience.members)

    def names(self) -> list[str]:
        """Every audience name, sorted."""
        with self._lock:
            self._apply_until(self._clock())
            return list(self._names)

    def seed(
        self,
        name: str,
        members: Mapping[str, Mapping[str, object]] | Iterable[str],
        display_name: str | None,
        created: datetime | None = None,
    ) -> None:
        """Create an audience with already-applied content (no pending write).

        ``created`` (timezone-aware) backdates it, e.g. to stand for another team's audience
        made long before; by default it is created now.
        """
        if created is not None and (not isinstance(created, datetime) or created.tzinfo is None):
            raise ValueError(f"created must be a timezone-aware datetime, got {created!r}")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid audience name ([A-Za-z0-9_-]{{1,255}})")
        if isinstance(members, (str, bytes)):
            raise TypeError("members must be a mapping of ID -> attributes or an iterable of IDs, not a str")
        if isinstance(members, Mapping):
            content: Stored = {str(i): dict(attributes) or None for i, attributes in members.items()}
        else:
            content = dict.fromkeys(map(str, members))
        with self._lock:
            self._apply_until(self._clock())
            if name in self._audiences:
                raise ValueError(f"the emulator already has an audience named {name!r}")
            now = _utc_now() if created is None else created.astimezone(timezone.utc)
            audience = _Audience(name, display_name, now, now, members=content)
            token = uuid.uuid4().hex
            write = _Write(token, audience, None, now, applied_order=next(self._applications))
            audience.tokens[token] = write
            audience.last_token = token
            self._insert(audience)

    def clear(self) -> None:
        """Drop every audience and pending write."""
        with self._lock:
            for audience in self._audiences.values():
                audience.alive = False
            self._audiences.clear()
            self._names.clear()
            self._pending.clear()
