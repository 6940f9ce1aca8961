"""The demo, the README's main job: ``batch-audiences demo`` and ``python -m batch_audiences demo``."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from batch_audiences._cli import main
from batch_audiences._cli._demo import run_demo
from batch_audiences._cli._output import Console


def test_demo_runs_the_whole_job_and_checks_it() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["demo"], stdout=out, stderr=err) == 0, err.getvalue()
    text = out.getvalue()
    for step in ("create_many", "filled", "replaced", "indexed", "listed", "removed", "uploaded 100,000 IDs"):
        assert step in text
    assert "100,000 IDs in 10 requests" in text
    assert "- OK" in text
    progress = err.getvalue()
    assert "create_many  100%" in progress  # the progress lines of both bulk calls
    assert "100,000/100,000 IDs" in progress


def test_demo_json_document_counts_retries() -> None:
    out = io.StringIO()
    code = run_demo(ids=20_000, audiences=12, seed=11,
                    console=Console(out=out, err=io.StringIO(), json_mode=True))
    assert code == 0
    document = json.loads(out.getvalue())
    assert document["ok"] is True
    assert document["upload"]["ids"] == 20_000
    assert document["audiences_listed"] == 12
    assert len(document["steps"]) == 7
    # Faults are injected and the server is rate limited: retries must have happened, and
    # every 429/503 the server sent was retried by the client.
    assert document["server_429"] + document["server_503"] > 0
    assert document["retries"] >= document["server_429"] + document["server_503"]
    assert document["problems"] == []


def test_python_dash_m_demo_works() -> None:
    done = subprocess.run([sys.executable, "-m", "batch_audiences", "demo", "--ids", "5000",
                           "--audiences", "6", "-q"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "- OK" in done.stdout
    assert done.stderr == ""  # -q: no progress lines
