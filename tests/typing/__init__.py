"""The public signatures of the two clients, locked: checked at run time (``test_signatures``)
and by ``mypy --strict`` (``api.py``, typed usages that are never run)."""
