"""The command line sits strictly on top of the library: nothing below it imports ``_cli``.

Checked on the source (every import statement, relative ones resolved), so a lazy import inside a
function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import batch_audiences

PACKAGE = Path(batch_audiences.__file__).parent
CLI = "batch_audiences._cli"
# The console script's own entry points may import it; they are the command line.
ENTRY_POINTS = {"batch_audiences.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, name: str) -> set[str]:
    """The absolute names of every module ``path`` (module ``name``) imports (``from x import y``
    gives x and x.y)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_nothing_in_the_library_imports_the_command_line() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name == CLI or name.startswith(CLI + ".") or name in ENTRY_POINTS:
            continue
        bad = sorted(m for m in imported(path, name) if m == CLI or m.startswith(CLI + "."))
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_the_check_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    # The check must be able to fail: 0.1's library-side demo imported the CLI's console this way.
    probe = tmp_path / "_demo.py"
    probe.write_text("from ._cli._output import Console\n\ndef f():\n    from . import _cli\n")
    found = imported(probe, "batch_audiences._demo")
    assert {CLI + "._output", CLI} <= found
