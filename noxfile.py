"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s typecheck`` (and more below)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, warnings as errors (as configured in pyproject.toml)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, the tests and the benchmarks."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", "batch_audiences", "tests", "benchmarks", "docs", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package (settings in pyproject.toml)."""
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy", "--strict")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs Material, API reference by mkdocstrings), built strictly:
    a broken reference, link or included README section fails the build. Output in ``site/``."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def audit(session: nox.Session) -> None:
    """pip-audit over the runtime dependencies as installed with the project (needs network).

    The project goes into a fresh environment first and what it pulled in is frozen, so that
    pip-audit's own dependencies are not what gets audited. ``--strict``: a dependency that
    could not be checked (no network, no advisory data) fails the session instead of passing
    unseen.
    """
    session.install(".")
    frozen = session.run("python", "-m", "pip", "freeze", "--exclude-editable", silent=True) or ""
    pins = [line for line in str(frozen).splitlines() if line and " @ " not in line]
    requirements = Path(session.create_tmp()) / "runtime-requirements.txt"
    requirements.write_text("\n".join(pins) + "\n")
    session.install("pip-audit>=2.7")
    session.run(
        "pip-audit", "--requirement", str(requirements), "--no-deps", "--disable-pip", "--strict",
        "--progress-spinner", "off", *session.posargs,
    )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (``python -m benchmarks``); pass its options after ``--``,
    e.g. ``nox -s bench -- --quick`` or ``nox -s bench -- --json bench-results.json``."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
