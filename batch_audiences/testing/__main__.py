"""``python -m batch_audiences.testing --port 8080``: serve an emulator until Ctrl-C."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
