"""batch-audiences: a typed Python SDK for Batch's Audience API.

Async-first (:class:`AsyncAudiencesClient`), with a blocking facade (:class:`AudiencesClient`)
that has the same methods, a bulk engine for millions of IDs, and a local emulator of the API in
:mod:`batch_audiences.testing`.

>>> from batch_audiences import IdAction, Member
>>> IdAction.add("user-1", {"plan": "pro"}).id
'user-1'
>>> Member("user-2").attributes is None
True
"""

from typing import TYPE_CHECKING, Any

from ._blocking import AudiencesClient
from ._bulk import (
    BulkReport,
    CreatedAudience,
    DeadlineExceededError,
    DependencyFailedError,
    FailedChunk,
    FailedItem,
    IfExists,
    NotSentError,
    ProgressEvent,
    ProgressKind,
    SkippedAudience,
    UncertainAudience,
    UploadMode,
    UploadReport,
)
from ._client import AsyncAudiencesClient
from ._config import RetryPolicy
from ._errors import (
    MAX_ERROR_BODY,
    APIError,
    AudienceExistsError,
    AuthenticationError,
    BadRequestError,
    BatchAudiencesError,
    ClientClosedError,
    ConfigurationError,
    IndexingTimeoutError,
    InvalidSettingError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    ThrottledError,
    TransportError,
    UncertainOutcomeError,
    UnexpectedResponseError,
    ValidationError,
)
from ._hooks import (
    AnswerReceived,
    ChunkAcknowledged,
    Hook,
    HookEvent,
    RequestFailed,
    RequestSent,
    RetryScheduled,
    Throttled,
)
from ._models import (
    MAX_ATTRIBUTES,
    MAX_ID_LENGTH,
    MAX_IDS_PER_REQUEST,
    Accepted,
    Action,
    AttributeValue,
    Audience,
    AudiencePage,
    AudienceType,
    Confirmation,
    IdAction,
    IndexingState,
    Member,
    NewAudience,
    Url,
)
from ._sender import MAX_RESPONSE_BYTES, AiohttpSender, HTTPRequest, HTTPResponse, Sender, SendError
from ._transport import ClientStats
from ._version import __version__

if TYPE_CHECKING:
    from ._sync import (
        PostgresStore,
        SnapshotStore,
        SqliteStore,
        SyncLockedError,
        SyncReport,
        SyncStateError,
    )

# Served on first use (PEP 562): the sync engine, its stores and sqlite3 cost a program that
# never syncs a noticeable share of its import time.
_LAZY: dict[str, str] = {
    name: "._sync"
    for name in (
        "PostgresStore", "SnapshotStore", "SqliteStore", "SyncLockedError", "SyncReport",
        "SyncStateError",
    )
}

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ERROR_BODY",
    "MAX_ID_LENGTH",
    "MAX_IDS_PER_REQUEST",
    "MAX_RESPONSE_BYTES",
    "APIError",
    "Accepted",
    "Action",
    "AiohttpSender",
    "AnswerReceived",
    "AsyncAudiencesClient",
    "AttributeValue",
    "Audience",
    "AudienceExistsError",
    "AudiencePage",
    "AudienceType",
    "AudiencesClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchAudiencesError",
    "BulkReport",
    "ChunkAcknowledged",
    "ClientClosedError",
    "ClientStats",
    "ConfigurationError",
    "Confirmation",
    "CreatedAudience",
    "DeadlineExceededError",
    "DependencyFailedError",
    "FailedChunk",
    "FailedItem",
    "HTTPRequest",
    "HTTPResponse",
    "Hook",
    "HookEvent",
    "IdAction",
    "IfExists",
    "IndexingState",
    "IndexingTimeoutError",
    "InvalidSettingError",
    "Member",
    "NewAudience",
    "NotFoundError",
    "NotSentError",
    "PostgresStore",
    "ProgressEvent",
    "ProgressKind",
    "RateLimitError",
    "RequestFailed",
    "RequestSent",
    "RetryPolicy",
    "RetryScheduled",
    "SendError",
    "Sender",
    "ServerError",
    "ServiceUnavailableError",
    "SkippedAudience",
    "SnapshotStore",
    "SqliteStore",
    "SyncLockedError",
    "SyncReport",
    "SyncStateError",
    "Throttled",
    "ThrottledError",
    "TransportError",
    "UncertainAudience",
    "UncertainOutcomeError",
    "UnexpectedResponseError",
    "UploadMode",
    "UploadReport",
    "Url",
    "ValidationError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
