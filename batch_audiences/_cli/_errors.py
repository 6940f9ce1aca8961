"""The CLI's exit codes and its own error type."""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SETUP", "EXIT_USAGE", "CLIError"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_SETUP: Final = 3
EXIT_INTERRUPTED: Final = 130


class CLIError(Exception):
    """A problem the CLI reports as one line, with the exit code it calls for."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
