"""6. Import time: ``import batch_audiences`` vs importing its dependencies alone.

Each sample is the median of several fresh interpreters, each timing one import statement with
``time.perf_counter`` around it (the interpreter's own start-up is not counted). The
dependencies are the package's runtime requirements: aiohttp, attrs, cattrs, backoff, orjson.
Whatever the SDK imports beyond them (its own modules, ``cattrs.preconf``, parts of the standard
library they do not use) is what the ratio charges to the SDK.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from ._runner import ROOT, Contender, Context, Result, Target, alternate, child_env, progress, summarize

KEY = "imports"
TITLE = "6. Import time"
DEPENDENCIES = "aiohttp, attrs, cattrs, backoff, orjson"

_TIMER = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"


def time_import(modules: str) -> float:
    """Seconds one fresh interpreter takes to run ``import <modules>``."""
    env = child_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the cached bytecode is what users load
    out = subprocess.run(
        [sys.executable, "-c", _TIMER.format(modules)], cwd=ROOT, env=env,
        capture_output=True, text=True, check=True,
    )
    return float(out.stdout.strip())


def run(ctx: Context) -> Result:
    launches = 3 if ctx.quick else 7
    # Compile and cache the bytecode of everything once, so no contender pays for it.
    time_import(f"batch_audiences, {DEPENDENCIES}")

    def contender(name: str, modules: str) -> Contender:
        return Contender(name, lambda: statistics.median(time_import(modules) for _ in range(launches)))

    contenders = [
        contender("dependencies alone", DEPENDENCIES),
        contender("batch_audiences", "batch_audiences"),
    ]
    rounds = ctx.rounds(3, 5)
    progress(f"{TITLE}: {rounds} rounds of {launches} interpreters per contender")
    samples = alternate(contenders, rounds)
    return summarize(
        KEY, TITLE, "s", samples, baseline="dependencies alone", higher_is_better=False,
        targets=[Target("batch_audiences", "<=", 1.3, "import batch_audiences / its dependencies")],
        notes=[f"Dependencies: import {DEPENDENCIES}. Each sample: the median of {launches} fresh "
               "interpreters, timing the import statement only."],
    )
