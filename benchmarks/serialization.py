"""4. Serialization: build and encode one 10,000-ID update body, two attributes per ID.

Every contender starts from the same rows ``(id, plan, score)`` and ends with the JSON bytes of
``{"name": ..., "ids": [{"action": "add", "id": ..., "attributes": {"plan": ..., "score": ...}}]}``:

- by hand: a list of dicts, then ``orjson.dumps`` (the baseline) or ``json.dumps(...).encode()``;
- through the SDK: ``IdAction.add(id, {...})`` for each row (every ID and attribute is
  validated), then the request model and its encoding, exactly as ``client.update()`` does it
  (``batch_audiences._codec.encode(UpdateRequest(name, actions))``).

Two more rows split the SDK's time between building the models and encoding them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import orjson

from batch_audiences import IdAction
from batch_audiences._codec import encode
from batch_audiences._models import UpdateRequest

from ._runner import Contender, Context, Result, Target, alternate, progress, summarize

KEY = "serialization"
TITLE = "4. Build and encode one 10,000-ID update body"
SIZE = 10_000
NAME = "bench-serialization"

Row = tuple[str, str, int]


def make_rows(count: int = SIZE) -> list[Row]:
    """The input: an ID and two attribute values per row, as read from a CRM export."""
    return [(f"customer-{i:09d}", ("free", "pro", "team")[i % 3], i) for i in range(count)]


def by_hand_orjson(rows: list[Row]) -> bytes:
    ids = [{"action": "add", "id": i, "attributes": {"plan": p, "score": s}} for i, p, s in rows]
    return orjson.dumps({"name": NAME, "ids": ids})


def by_hand_json(rows: list[Row]) -> bytes:
    ids = [{"action": "add", "id": i, "attributes": {"plan": p, "score": s}} for i, p, s in rows]
    return json.dumps({"name": NAME, "ids": ids}, separators=(",", ":")).encode()


def through_sdk(rows: list[Row]) -> bytes:
    add = IdAction.add
    return encode(UpdateRequest(NAME, [add(i, {"plan": p, "score": s}) for i, p, s in rows]))


def run(ctx: Context) -> Result:
    rows = make_rows()
    # The same document whichever way it is built (key order aside, json.dumps spells it the same).
    reference = orjson.loads(by_hand_orjson(rows))
    for build in (by_hand_json, through_sdk):
        if orjson.loads(build(rows)) != reference:
            raise RuntimeError(f"{build.__name__} does not build the same body")
    repeat = 5 if ctx.quick else 10
    actions = [IdAction.add(i, {"plan": p, "score": s}) for i, p, s in rows]

    def per_body(build: Callable[[], object]) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            for _ in range(repeat):
                build()
            return (time.perf_counter() - start) / repeat

        return measure

    add = IdAction.add
    contenders = [
        Contender("hand-built dict + orjson.dumps", per_body(lambda: by_hand_orjson(rows))),
        Contender("SDK models + encode", per_body(lambda: through_sdk(rows))),
        Contender("hand-built dict + json.dumps", per_body(lambda: by_hand_json(rows))),
        Contender(
            "SDK: models only", per_body(lambda: [add(i, {"plan": p, "score": s}) for i, p, s in rows]),
            note="10,000 IdAction.add(...) calls, each checking its ID and attributes",
        ),
        Contender(
            "SDK: encode only", per_body(lambda: encode(UpdateRequest(NAME, actions))),
            note="the request model and its JSON, from IdActions built beforehand",
        ),
    ]
    rounds = ctx.rounds(3, 15)
    progress(f"{TITLE}: {rounds} rounds of {repeat} bodies per contender")
    samples = alternate(contenders, rounds)
    return summarize(
        KEY, TITLE, "s", samples, baseline="hand-built dict + orjson.dumps", higher_is_better=False,
        targets=[Target("SDK models + encode", "<=", 3.0, "SDK models + encode / hand-built + orjson")],
        notes=[f"Time per body, the mean of {repeat} bodies per round."],
        row_notes={c.name: c.note for c in contenders if c.note},
    )
