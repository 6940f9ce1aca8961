"""Show the blocking client's derived methods in the API reference as the methods they are.

``AudiencesClient`` defines ``create = _blocking(AsyncAudiencesClient.create)``: read from the
source, that is an attribute. This extension replaces each such attribute with a method that
has the async method's parameters and documentation, returning what the blocking call returns
(``Iterator[X]`` for ``_blocking_iter``, ``AudiencesClient`` for ``_blocking_derived``), as
``help()`` shows it at run time.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_DERIVED = re.compile(r"^(_blocking|_blocking_iter|_blocking_derived)\(AsyncAudiencesClient\.(\w+)\)$")

# As the docstrings that _blocking._adopt writes.
_SUMMARY = {
    "_blocking": "the same arguments, called without `await`",
    "_blocking_iter": "the same arguments, called without `await`",
    "_blocking_derived": "the same arguments, returning an `AudiencesClient` that runs on this "
    "client's event-loop thread",
}


class BlockingTwins(griffe.Extension):
    """Turn derived attributes of ``AudiencesClient`` into methods, once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "batch_audiences":
            return
        blocking = pkg["_blocking.AudiencesClient"]
        source = pkg["_client.AsyncAudiencesClient"]
        for name, member in list(blocking.members.items()):
            match = _DERIVED.match(str(getattr(member, "value", "") or ""))
            if not member.is_attribute or match is None:
                continue
            wrapper, target_name = match.groups()
            target = source.members[target_name]
            returns = target.returns
            if wrapper != "_blocking":  # AsyncIterator[X] -> Iterator[X], the client type
                returns = str(returns).replace("Async", "", 1)
            docstring = target.docstring.value if target.docstring else ""
            twin = griffe.Function(
                name,
                parameters=target.parameters,
                returns=returns,
                lineno=member.lineno,
                endlineno=member.endlineno,
                docstring=griffe.Docstring(
                    f"Blocking `AsyncAudiencesClient.{target_name}`: {_SUMMARY[wrapper]}.\n\n"
                    f"{docstring}",
                    parser=target.docstring.parser if target.docstring else None,
                    parser_options=target.docstring.parser_options if target.docstring else None,
                ),
            )
            blocking.set_member(name, twin)
