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
