"""``python -m batch_audiences``: the ``batch-audiences`` command (``python -m batch_audiences demo``)."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
