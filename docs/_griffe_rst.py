"""Render the SDK's reStructuredText-flavoured docstrings as Markdown for the API reference.

The docstrings are written to read well in ``help()`` and in an editor: Sphinx roles
(``:class:`Member```), doctest blocks (``>>> ...``) and literal blocks introduced by ``::``.
Markdown would show the roles verbatim and turn ``>>>`` into nested quotes, so this extension
rewrites them as code spans and fenced ``pycon``/``python`` blocks when the reference is built.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):`~?([^`]+)`")
_DOCTEST = re.compile(r"^(\s*)>>> ")


def _fence_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        doctest = _DOCTEST.match(line)
        if doctest:
            # A doctest block runs until the first blank line.
            indent = doctest.group(1)
            out.append(f"{indent}```pycon")
            while index < len(lines) and lines[index].strip():
                out.append(lines[index])
                index += 1
            out.append(f"{indent}```")
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            # A literal block: the indented lines after "::" (and one blank line) are code.
            stripped = line.rstrip()[:-2].rstrip()
            out.append(stripped + ":" if stripped else "")
            base = len(line) - len(line.lstrip())
            index += 1
            block: list[str] = []
            while index < len(lines) and (
                not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > base
            ):
                block.append(lines[index])
                index += 1
            while block and not block[-1].strip():
                block.pop()
            code = [entry for entry in block if entry.strip()]
            margin = min((len(entry) - len(entry.lstrip()) for entry in code), default=0)
            out.extend(["", " " * base + "```python"])
            out.extend((" " * base + entry[margin:]) if entry.strip() else "" for entry in block)
            out.extend([" " * base + "```", ""])
            continue
        out.append(line)
        index += 1
    return "\n".join(out)


def rewrite(text: str) -> str:
    """Turn roles into code spans and doctest / literal blocks into fenced code."""
    text = _ROLE.sub(lambda match: f"`{match.group(1).split('.')[-1]}`", text)
    return _fence_blocks(text)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring once it has been loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
