"""The shared machinery: contenders run alternately in rounds, medians, ratios, tables, JSON.

A comparison builds :class:`Contender` objects, hands them to :func:`alternate`, and turns the
samples into a :class:`Result` with :func:`summarize`. Each round runs every contender once, in
an order rotated from round to round, so that a slow phase of the machine (another process, a
frequency change, the garbage collector) is spread over all contenders instead of landing on one.
One warm-up round is run first and thrown away (connection pools, caches, code paths). Ratios are
paired: a contender's sample is divided by the baseline's sample of the same round, and the
median of those is reported (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal, TypeVar

ROOT = Path(__file__).resolve().parent.parent

API_KEY = "bench-rest-api-key"
PROJECT_KEY = "project_bench"

Relation = Literal[">=", "<="]
T = TypeVar("T")


def progress(message: str) -> None:
    """One line of progress on stderr (the tables go to stdout)."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


@dataclass
class Contender:
    """One way of doing the comparison's work.

    ``measure`` runs the work once and returns the metric of that run (it times itself, so that
    preparing inputs stays outside the timed part). ``setup`` and ``teardown`` run once, around
    all rounds (sessions, clients, threads).
    """

    name: str
    measure: Callable[[], float]
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    note: str = ""


@dataclass
class Target:
    """A goal for one contender's ratio to the baseline, e.g. ``>= 0.90``."""

    contender: str
    relation: Relation
    value: float
    label: str


@dataclass
class Check:
    """A target and what was measured for it."""

    comparison: str
    label: str
    relation: Relation
    target: float
    measured: float
    contender: str | None = None

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.relation == ">=" else self.measured <= self.target


@dataclass
class Row:
    name: str
    samples: list[float]
    median: float
    spread: float  # (max - min) / median, over the rounds
    ratio: float | None
    note: str = ""


@dataclass
class Result:
    """What one comparison measured."""

    key: str
    title: str
    unit: str
    higher_is_better: bool
    baseline: str
    rows: list[Row]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Context:
    """What every comparison gets: the mode, and the server when it needs one."""

    quick: bool
    workdir: Path
    server_kind: str = "minimal"
    rounds_override: int | None = None
    _server: Server | None = None

    def rounds(self, quick: int, full: int) -> int:
        """The comparison's number of rounds (its own defaults, unless ``--rounds`` was given)."""
        if self.rounds_override is not None:
            return self.rounds_override
        return quick if self.quick else full

    def server(self) -> Server:
        """The benchmark server, started on first use."""
        if self._server is None:
            self._server = Server.start(self.server_kind)
        return self._server

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def stop_process(process: subprocess.Popen[str], *, terminate: bool) -> None:
    """End a server child: close its stdin (``terminate``: and signal it), give it 10 s, then kill."""
    if process.stdin is not None:
        process.stdin.close()
    if terminate:
        process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


@dataclass
class Server:
    """A server running in a subprocess; see :meth:`start`."""

    kind: str
    base_url: str
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        """Where the routes live (``base_url`` plus the API version)."""
        return f"{self.base_url}/2.8"

    @classmethod
    def start(cls, kind: str = "minimal") -> Server:
        """Start the minimal server (or the emulator) in a subprocess and wait until it listens.

        A subprocess rather than a thread of this process: a server thread would share this
        process's GIL, so its work would be charged to whichever contender is running, and
        the client and the server would take turns on one core instead of using both. In a
        separate process each gets one of the two cores; the numbers then measure the client.
        """
        if kind == "minimal":
            command = [sys.executable, "-m", "benchmarks._server", "--port", "0"]
        elif kind == "emulator":
            command = [
                sys.executable, "-m", "batch_audiences.testing", "--port", "0",
                "--indexing-delay", "0", "--api-key", API_KEY, "--project-key", PROJECT_KEY,
            ]
        else:
            raise ValueError(f"unknown server kind {kind!r}")
        env = child_env()
        # stdin: a pipe the minimal server watches, to stop when this process is gone.
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1,
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        base_url = None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("PORT "):
                base_url = f"http://127.0.0.1:{int(line.split()[1])}"
                break
            if "listening on " in line:
                base_url = line.rsplit("listening on ", 1)[1].strip()
                break
        if base_url is None:
            process.kill()
            raise RuntimeError(f"the {kind} server did not start")
        return cls(kind, base_url, process)

    def stop(self) -> None:
        stop_process(self.process, terminate=True)


def child_env() -> dict[str, str]:
    """The environment for a subprocess of the suite: ours, with the repository importable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def sdk_headers() -> dict[str, str]:
    """The headers the SDK sends on a POST, for the hand-written contenders to send too."""
    from batch_audiences._transport import USER_AGENT

    return {
        "Authorization": f"Bearer {API_KEY}",
        "X-Batch-Project": PROJECT_KEY,
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        "Content-Type": "application/json",
    }


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then freeze what is alive, before a timed run.

    A contender then pays for collecting what it allocates itself, not for another contender's
    garbage nor for traversing the benchmark's own heap (imported modules, the million IDs of
    the upload comparison), which would make allocation-heavy code look slower than it is in
    a lean process.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def alternate(contenders: Sequence[Contender], rounds: int, *, warmup: int = 1) -> dict[str, list[float]]:
    """Run every contender once per round, rotating the order; return the samples by name."""
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    started: list[Contender] = []
    try:
        for contender in contenders:
            if contender.setup is not None:
                contender.setup()
            started.append(contender)
        for index in range(warmup + rounds):
            shift = index % len(contenders)
            order = list(contenders[shift:]) + list(contenders[:shift])
            for contender in order:
                with frozen_heap():
                    value = contender.measure()
                if index >= warmup:
                    samples[contender.name].append(value)
            if index >= warmup:
                progress(f"round {index - warmup + 1}/{rounds}")
    finally:
        for contender in reversed(started):
            if contender.teardown is not None:
                contender.teardown()
    return samples


def summarize(
    key: str,
    title: str,
    unit: str,
    samples: dict[str, list[float]],
    *,
    baseline: str,
    higher_is_better: bool,
    targets: Sequence[Target] = (),
    notes: Sequence[str] = (),
    row_notes: dict[str, str] | None = None,
) -> Result:
    """Medians, spreads and ratios to ``baseline``; ``targets`` checked on the ratios.

    The ratio of a contender is the median, over the rounds, of its sample divided by the
    baseline's sample of the same round.
    """
    base = samples[baseline]
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median if median else 0.0
        # Paired: each round's sample over the baseline's sample of the same round, which ran
        # next to it under the same conditions; the median of those is robust to a slow phase.
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True)) if all(base) else None
        rows.append(Row(name, list(values), median, spread, ratio, (row_notes or {}).get(name, "")))
    checks = []
    by_name = {row.name: row for row in rows}
    for target in targets:
        row = by_name[target.contender]
        assert row.ratio is not None
        checks.append(Check(title, target.label, target.relation, target.value, row.ratio, row.name))
    return Result(key, title, unit, higher_is_better, baseline, rows, checks, list(notes))


def _format_value(value: float, unit: str) -> str:
    if unit in ("s", "seconds"):
        if value < 1e-3:
            return f"{value * 1e6:,.0f} µs"
        if value < 1:
            return f"{value * 1e3:,.2f} ms"
        return f"{value:,.2f} s"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, width, how in zip(cells, widths, align, strict=True):
            out.append(cell.rjust(width) if how == "r" else cell.ljust(width))
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join(
        "-" * (width + 1) + ":" if how == "r" else "-" * (width + 2)
        for width, how in zip(widths, align, strict=True)
    ) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def render(result: Result) -> str:
    """A comparison as a Markdown table (readable in a terminal as it is)."""
    targets = {c.contender: c for c in result.checks if c.contender is not None}
    better = "higher is better" if result.higher_is_better else "lower is better"
    lines = [f"### {result.title}", "", f"Median of {len(result.rows[0].samples)} rounds; {better}."]
    rows = []
    for row in result.rows:
        target = targets.get(row.name)
        name = f"{row.name} (baseline)" if row.name == result.baseline else row.name
        rows.append([
            name,
            _format_value(row.median, result.unit),
            f"±{row.spread * 50:.0f}%",
            f"{row.ratio:.2f}" if row.ratio is not None else "",
            f"{target.relation} {target.target:g}" if target else "",
            ("met" if target.met else "MISSED") if target else "",
        ])
    lines += ["", _table(["contender", "median", "spread", "ratio", "target", ""], rows, "lrrrll")]
    for check in (c for c in result.checks if c.contender is None):
        lines.append(
            f"\n{check.label}: {check.measured:,.2f} (target {check.relation} {check.target:g}) "
            f"{'met' if check.met else 'MISSED'}"
        )
    notes = [f"- {row.name}: {row.note}" for row in result.rows if row.note]
    if notes:
        lines += ["", *notes]
    for note in result.notes:
        lines.append(f"\n{note}")
    return "\n".join(lines)


def render_summary(results: Sequence[Result]) -> str:
    """Every target of the run, in one table."""
    rows = []
    for result in results:
        for check in result.checks:
            rows.append([
                check.comparison, check.label, f"{check.relation} {check.target:g}",
                f"{check.measured:.2f}", "met" if check.met else "MISSED",
            ])
    if not rows:
        return ""
    return "### Targets\n\n" + _table(["comparison", "ratio", "target", "measured", ""], rows, "lllrl")


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
    }
    for package in ("batch-audiences", "aiohttp", "orjson", "cattrs", "attrs", "httpx", "requests"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def render_machine(info: dict[str, str]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpus", "cpu", "python", "os"))
    return (
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['python']}, {info['os']}\n"
        f"Packages: {packages}"
    )


def write_json(path: Path, results: Sequence[Result], info: dict[str, str], *, quick: bool) -> None:
    payload = {
        "machine": info,
        "quick": quick,
        "results": [asdict(result) for result in results],
        "targets": [
            {**asdict(check), "met": check.met} for result in results for check in result.checks
        ],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` took."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


async def drive(concurrency: int, items: Sequence[T], call: Callable[[T], Awaitable[object]]) -> float:
    """Seconds ``concurrency`` workers took to ``call`` every item, one call at a time each."""
    source = iter(items)

    async def worker() -> None:
        for item in source:
            await call(item)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


class Names:
    """Fresh audience names for every batch, so that no two creates of a run (against the
    emulator, which answers 400 to a second one) name the same audience."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._batches = 0

    def take(self, count: int) -> list[str]:
        self._batches += 1
        return [f"bench-{self._prefix}-{self._batches}-{i}" for i in range(count)]
