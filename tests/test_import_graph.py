"""The package's shape, checked from its source: no import cycle, nothing below the command line
imports it (a lazy import inside a function counts as much as one at the top), and only the
operations layer names a route of the API."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import batch_audiences

PACKAGE = Path(batch_audiences.__file__).parent
# The emulator is a separate server that shares no code with the client; it names the routes
# it serves. The CLI (and ``python -m batch_audiences``, its entry point) is a layer on top.
# Neither is part of the library proper.
LIBRARY = sorted(
    path for path in PACKAGE.rglob("*.py")
    if not {"_cli", "testing", "__main__.py"} & set(path.relative_to(PACKAGE).parts)
)
OPERATIONS = PACKAGE / "_api.py"
CLI = "batch_audiences._cli"


def module_name(path: Path) -> str:
    parts = ["batch_audiences", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, *, type_checking: bool = True, name: str | None = None) -> set[str]:
    """The package modules ``path`` imports, at module level or in functions; ``TYPE_CHECKING``
    imports too unless ``type_checking`` is false (they never run, but a circle of them is still
    two modules that cannot be read apart). ``name``: the module ``path`` is read as (default: its
    name in the package), for a probe file outside it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = module_name(path) if name is None else name
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if not type_checking and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("batch_audiences"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("batch_audiences"):
                found.add(target)
                # "from . import x" may name a submodule.
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph(paths: list[Path], *, type_checking: bool) -> dict[str, set[str]]:
    """Module -> the modules of ``paths`` it imports, counting that importing a submodule runs
    its package's ``__init__`` first (a package's imports of its own submodules left out)."""
    modules = {module_name(path) for path in paths}
    edges = {module_name(path): imports_of(path, type_checking=type_checking) & modules for path in paths}
    for module, targets in edges.items():
        targets.difference_update({t for t in targets if t.startswith(module + ".") or t == module})
        for target in set(targets):
            parent = target.rpartition(".")[0]
            while parent and parent != "batch_audiences" and not module.startswith(parent + "."):
                if parent in edges:
                    targets.add(parent)
                parent = parent.rpartition(".")[0]
        targets.discard("batch_audiences")
    return edges


def cycles_in(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return cycles


def describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_import_cycle_in_the_library_not_even_for_type_checking() -> None:
    cycles = cycles_in(graph(LIBRARY, type_checking=True))
    assert not cycles, describe(cycles)


def test_no_import_cycle_in_the_package_at_run_time() -> None:
    cycles = cycles_in(graph(sorted(PACKAGE.rglob("*.py")), type_checking=False))
    assert not cycles, describe(cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles_in(edges) == [["a", "b", "c", "a"]]
    assert cycles_in({"a": {"b"}, "b": set()}) == []


def test_nothing_below_the_cli_imports_it() -> None:
    # The library and the emulator alike; only the console script's entry point may.
    below = [
        path for path in PACKAGE.rglob("*.py")
        if "_cli" not in path.relative_to(PACKAGE).parts and path != PACKAGE / "__main__.py"
    ]
    offenders = {
        module_name(path): sorted(
            target for target in imports_of(path) if target == CLI or target.startswith(CLI + ".")
        )
        for path in sorted(below)
    }
    offenders = {module: targets for module, targets in offenders.items() if targets}
    assert offenders == {}


def test_only_the_operations_layer_names_a_route() -> None:
    route = re.compile(r"""["']/audiences/""")
    named = [
        str(path.relative_to(PACKAGE)) for path in LIBRARY
        if path != OPERATIONS and route.search(path.read_text(encoding="utf-8"))
    ]
    assert named == []
    assert route.search(OPERATIONS.read_text(encoding="utf-8"))


def test_the_import_reader_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    # The check must be able to fail: 0.1's library-side demo imported the CLI's console this way.
    probe = tmp_path / "_demo.py"
    probe.write_text("from ._cli._output import Console\n\ndef f():\n    from . import _cli\n")
    assert {CLI + "._output", CLI} <= imports_of(probe, name="batch_audiences._demo")


def test_the_import_reader_sees_relative_and_type_checking_imports() -> None:
    found = imports_of(PACKAGE / "_client.py")
    assert {"batch_audiences._api", "batch_audiences._bulk"} <= found
    indexing = PACKAGE / "_bulk" / "_indexing.py"
    assert "batch_audiences._api" in imports_of(indexing)  # two levels up
    assert "batch_audiences._pacing" in imports_of(PACKAGE / "_api.py")  # under TYPE_CHECKING
    assert "batch_audiences._pacing" not in imports_of(PACKAGE / "_api.py", type_checking=False)


def test_importing_the_package_leaves_the_sync_machinery_unloaded() -> None:
    # ``client.sync()`` and the sync names of the public face load it on first use: a program
    # that never syncs does not pay for it (nor for sqlite3) at import. A fresh interpreter,
    # since this one has loaded everything the suite touched.
    probe = (
        "import sys, batch_audiences\n"
        "print(sorted(m for m in sys.modules if m == 'sqlite3' or m.startswith('batch_audiences._sync')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_sync_names_load_on_first_use() -> None:
    probe = (
        "import sys, batch_audiences\n"
        "from batch_audiences import SyncReport\n"
        "import batch_audiences._sync._report as report\n"
        "assert SyncReport is report.SyncReport\n"
        "assert batch_audiences.SqliteStore.__module__.startswith('batch_audiences._sync')\n"
        "public = set(batch_audiences.__all__)\n"
        "assert public <= set(dir(batch_audiences)), public - set(dir(batch_audiences))\n"
        "assert all(getattr(batch_audiences, name) is not None for name in public)\n"
        "try:\n"
        "    batch_audiences.NoSuchName\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "NoSuchName" in out.stdout
