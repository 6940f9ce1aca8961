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
from ._transport import ClientStats
from ._version import __version__

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_ID_LENGTH",
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
    "Confirmation",
    "CreatedAudience",
    "DeadlineExceededError",
    "DependencyFailedError",
    "FailedChunk",
    "FailedItem",
    "IdAction",
    "IfExists",
    "IndexingState",
    "IndexingTimeoutError",
    "InvalidSettingError",
    "Member",
    "NewAudience",
    "NotFoundError",
    "NotSentError",
    "ProgressEvent",
    "ProgressKind",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "SkippedAudience",
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
