"""Which member of :class:`AudiencesClient` is the twin of which member of
:class:`AsyncAudiencesClient`, and what a twin's signature must be.

The rule, shared by the signature test and by the test suite's ``SyncAdapter``: every public
member of the async client has a blocking twin of the same name (``aclose``, ``__aenter__`` and
``__aexit__`` have ``close``, ``__enter__`` and ``__exit__``) with the same parameters (names,
kinds, defaults, annotations), returning what the async one's awaitable would give
(``AsyncIterator[X]`` becomes ``Iterator[X]``, and the async client type the blocking one).
"""

from __future__ import annotations

import collections.abc
import inspect
import sys
import typing
from collections.abc import Callable, Iterator
from typing import Any

import batch_audiences
from batch_audiences import AsyncAudiencesClient, AudiencesClient

__all__ = [
    "RENAMED", "actual_signature", "blocking_signature", "property_type", "public_members", "twin_name",
]

#: Async members whose blocking twin has another name.
RENAMED = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
#: Members compared even though their names start with an underscore.
DUNDERS = {"__init__", *RENAMED, *RENAMED.values()}


def twin_name(name: str) -> str:
    return RENAMED.get(name, name)


def public_members(cls: type) -> dict[str, Any]:
    """The class's own public methods and properties (and the dunders above), by name."""
    return {
        name: member
        for name, member in vars(cls).items()
        if (not name.startswith("_") or name in DUNDERS)
        and (callable(member) or isinstance(member, property))
    }


def _blocking_type(annotation: Any) -> Any:
    """What a blocking twin gives where the async member gives ``annotation``."""
    if annotation is AsyncAudiencesClient:
        return AudiencesClient
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (collections.abc.Awaitable, collections.abc.Coroutine):
        return _blocking_type(args[-1])
    if origin in (collections.abc.AsyncIterator, collections.abc.AsyncGenerator):
        return Iterator[args[0]]  # type: ignore[valid-type]
    return annotation


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    # The sync names are imported by the client modules only for type checkers (the package
    # serves them on first use, so that importing it does not load the sync engine): resolve
    # annotations against the public face, as a reader of the documentation does. A blocking
    # twin then keeps the async method's annotation text, which names what the async client's
    # module imports.
    names = vars(sys.modules[AsyncAudiencesClient.__module__]) | {
        name: getattr(batch_audiences, name) for name in batch_audiences.__all__
    }
    return typing.get_type_hints(function, localns=names)


def _described(function: Callable[..., Any], *, blocking_of_async: bool) -> inspect.Signature:
    """``function``'s signature with evaluated annotations (and made blocking, if asked)."""
    signature = inspect.signature(function)
    hints = _hints(function)
    parameters = [
        parameter.replace(annotation=hints.get(name, parameter.annotation))
        for name, parameter in signature.parameters.items()
    ]
    returns = hints.get("return", signature.return_annotation)
    if blocking_of_async:
        returns = _blocking_type(returns)
    return signature.replace(parameters=parameters, return_annotation=returns)


def blocking_signature(async_member: Callable[..., Any]) -> inspect.Signature:
    """The signature the blocking twin of ``async_member`` must have."""
    return _described(async_member, blocking_of_async=True)


def actual_signature(member: Callable[..., Any]) -> inspect.Signature:
    return _described(member, blocking_of_async=False)


def property_type(member: property) -> Any:
    assert member.fget is not None
    return _hints(member.fget).get("return")
