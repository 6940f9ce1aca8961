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

from ._blocking import AudiencesClient
from ._bulk_errors import DeadlineExceededError, DependencyFailedError, NotSentError
from ._client import AsyncAudiencesClient
from ._config import RetryPolicy
from ._errors import (
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
    UnexpectedResponseError,
    ValidationError,
)
from ._models import (
    MAX_ATTRIBUTES,
    MAX_IDS_PER_REQUEST,
    Accepted,
    Action,
    AttributeValue,
    Audience,
    AudiencePage,
    AudienceType,
    IdAction,
    IndexingState,
    Member,
    NewAudience,
    Url,
)
from ._reports import (
    BulkReport,
    CreatedAudience,
    FailedChunk,
    FailedItem,
    ProgressEvent,
    SkippedAudience,
    UploadReport,
)
from ._sync import (
    PostgresStore,
    SnapshotStore,
    SqliteStore,
    SyncLockedError,
    SyncReport,
    SyncStateError,
)
from ._transport import ClientStats
from ._version import __version__

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_IDS_PER_REQUEST",
    "APIError",
    "Accepted",
    "Action",
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
    "ClientClosedError",
    "ClientStats",
    "ConfigurationError",
    "CreatedAudience",
    "DeadlineExceededError",
    "DependencyFailedError",
    "FailedChunk",
    "FailedItem",
    "IdAction",
    "IndexingState",
    "IndexingTimeoutError",
    "InvalidSettingError",
    "Member",
    "NewAudience",
    "NotFoundError",
    "NotSentError",
    "PostgresStore",
    "ProgressEvent",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "SkippedAudience",
    "SnapshotStore",
    "SqliteStore",
    "SyncLockedError",
    "SyncReport",
    "SyncStateError",
    "ThrottledError",
    "TransportError",
    "UnexpectedResponseError",
    "UploadReport",
    "Url",
    "ValidationError",
    "__version__",
]
