"""Show the blocking client's derived methods in the API reference as the methods they are.

``AudiencesClient`` defines ``create = _blocking(AsyncAudiencesClient.create)``: read from the
source, that is an attribute. This extension replaces each such attribute with a method that
has the async method's parameters and documentation, returning what the blocking call returns
(``Iterator[X]`` for ``_blocking_iter``), as ``help()`` shows it at run time.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_DERIVED = re.compile(r"^(_blocking|_blocking_iter)\(AsyncAudiencesClient\.(\w+)\)$")


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
            if wrapper == "_blocking_iter":
                returns = str(returns).replace("AsyncIterator", "Iterator", 1)
            docstring = target.docstring.value if target.docstring else ""
            twin = griffe.Function(
                name,
                parameters=target.parameters,
                returns=returns,
                lineno=member.lineno,
                endlineno=member.endlineno,
                docstring=griffe.Docstring(
                    f"Blocking `AsyncAudiencesClient.{target_name}`: the same arguments, called "
                    f"without `await`.\n\n{docstring}",
                    parser=target.docstring.parser if target.docstring else None,
                    parser_options=target.docstring.parser_options if target.docstring else None,
                ),
            )
            blocking.set_member(name, twin)
