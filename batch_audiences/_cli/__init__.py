"""The ``batch-audiences`` command line (private: run it, do not import from it).

A thin layer over the public API: it reads files, draws progress and prints reports; every
request goes through :class:`~batch_audiences.AsyncAudiencesClient` and its bulk methods.
"""

from ._main import console_main, main

__all__ = ["console_main", "main"]
