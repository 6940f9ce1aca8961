"""Optional dependencies: imported on first use, with one clear line when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from .._errors import BatchAudiencesError

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(BatchAudiencesError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the
    extra to install (``pip install 'batch-audiences[parquet]'``)."""


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """``import module``, or :class:`MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingExtraError(
            f"{feature} needs {package}: pip install 'batch-audiences[{extra}]'"
        ) from None
