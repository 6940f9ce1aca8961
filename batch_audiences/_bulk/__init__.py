"""The bulk engines, ``upload`` and ``create_many``, one idea per module.

- :mod:`._call`: what every bulk call shares (argument checks, opening the input, deadline,
  retry budget, stop state) and the :class:`Tally` its progress events and report read;
- :mod:`._encode`: items to body bytes (through the codec, which owns the wire format);
- :mod:`._chunking`: the ordering rule, proved in its docstring;
- :mod:`._chunk`, :mod:`._upload`: the upload scheduler (read → send → fail → stop);
- :mod:`._indexing`: confirming acknowledged chunks applied;
- :mod:`._create_many`: many creates, each with a definite outcome;
- :mod:`._reports`, :mod:`._errors`: what the calls return and why a part was not sent.

Both engines talk to Batch only through the operations layer (:mod:`batch_audiences._api`).
"""

from ._create_many import run_create_many
from ._encode import check_item
from ._errors import DeadlineExceededError, DependencyFailedError, NotSentError
from ._reports import (
    BulkReport,
    CreatedAudience,
    FailedChunk,
    FailedItem,
    IfExists,
    ProgressEvent,
    ProgressKind,
    SkippedAudience,
    UncertainAudience,
    UploadMode,
    UploadReport,
)
from ._upload import LATE_WRITE_GRACE, MIN_TRACKED_IDS, UploadItem, run_upload

__all__ = [
    "LATE_WRITE_GRACE",
    "MIN_TRACKED_IDS",
    "BulkReport",
    "CreatedAudience",
    "DeadlineExceededError",
    "DependencyFailedError",
    "FailedChunk",
    "FailedItem",
    "IfExists",
    "NotSentError",
    "ProgressEvent",
    "ProgressKind",
    "SkippedAudience",
    "UncertainAudience",
    "UploadItem",
    "UploadMode",
    "UploadReport",
    "check_item",
    "run_create_many",
    "run_upload",
]
