"""Keeping the REST API key out of every text the SDK lets out.

A server or proxy may echo the key back anywhere: in the reason phrase of its status line, in a
header (even a malformed one, which the HTTP parser then quotes in its error), in an error body
— raw, JSON-escaped (``\\u0073k_…``), percent-encoded, as HTML entities, or any mix of these,
character by character. Replacing the raw bytes of the key misses all but the first form.

:class:`Redactor` matches the key *as a reader would decode it*: one regular expression in which
each character of the key may appear in any of those encodings, so the key is found whatever
mix a server used, and the whole encoded run is replaced. It also takes out a long fragment of
the key (a prefix or suffix of at least :data:`MIN_FRAGMENT` characters): an echo cut short by a
server, a proxy or a length cap must not leak most of the key either. The key's own characters
match in their own case; the hexadecimal digits of an escape, in either.

Redaction happens at the boundary, where text leaves the SDK: the transport redacts an answer's
body, headers and reason phrase before anything is built from them (the headers of a success no
hook sees, when first read: :class:`HeadersOnRead`), and the text of exceptions and log lines
once more after decoding. :func:`install_log_filter` puts a filter on the SDK's
logger that redacts every record against every live client's key, as a last line of defence.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["MIN_FRAGMENT", "REDACTED", "HeadersOnRead", "Redactor", "install_log_filter"]

REDACTED: Final = "<redacted>"
_REDACTED_BYTES: Final = REDACTED.encode()
#: The shortest prefix or suffix of a key taken out on its own. ``Secret.masked`` shows the last
#: four characters on purpose; a fragment this long is treated as the key itself.
MIN_FRAGMENT: Final = 8
# Keys shorter than this are only redacted whole: their fragments would match ordinary text.
_FRAGMENTS_FROM: Final = 12


def _hex(number: int, width: int = 0) -> str:
    # Hexadecimal digits come in either case; the key's own characters do not.
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{number:0{width}x}")


def _forms(char: str) -> list[str]:
    """Every way ``char`` may be written in a text that was (partly) escaped, as regex parts."""
    code = ord(char)
    forms = [
        re.escape(char),
        "".join("%" + _hex(byte, 2) for byte in char.encode("utf-8")),  # percent-encoded
        f"&#0*{code};",  # HTML decimal entity
        f"&#[xX]0*{_hex(code)};",  # HTML hexadecimal entity
        r"\\U" + _hex(code, 8),  # Python's long escape
    ]
    if code < 0x100:
        forms.append(r"\\x" + _hex(code, 2))  # Python / C escape, as repr() writes it
    if code < 0x10000:
        forms.append(r"\\u" + _hex(code, 4))  # JSON / Python escape
    else:  # JSON writes an astral character as a surrogate pair
        high, low = divmod(code - 0x10000, 0x400)
        forms.append(r"\\u" + _hex(0xD800 + high, 4) + r"\\u" + _hex(0xDC00 + low, 4))
    if char == "/":
        forms.append(r"\\/")  # JSON may escape a slash
    return forms


def _char_pattern(char: str) -> str:
    return "(?:" + "|".join(_forms(char)) + ")"


def _patterns(key: str) -> tuple[str, str | None]:
    """The key whole or a prefix of it; and a suffix of it (``None`` for a short key)."""
    parts = [_char_pattern(char) for char in key]
    if len(key) < _FRAGMENTS_FROM:
        return "".join(parts), None
    # A prefix of at least MIN_FRAGMENT characters, as long as it goes (greedy nested options)…
    tail = ""
    for part in reversed(parts[MIN_FRAGMENT:]):
        tail = f"(?:{part}{tail})?"
    # …or a suffix of at least MIN_FRAGMENT characters, as long as it goes back.
    head = ""
    for part in parts[: len(key) - MIN_FRAGMENT]:
        head = f"(?:{head}{part})?"
    return "".join(parts[:MIN_FRAGMENT]) + tail, head + "".join(parts[len(key) - MIN_FRAGMENT :])


class Redactor:
    """Finds one key in text or bytes, in any encoding or mix of encodings, and hides it.

    >>> redactor = Redactor("sk-live-7f3a9c2e5b8d")
    >>> redactor.text("401 Bad key Bearer sk-live-7f3a9c2e5b8d")
    '401 Bad key Bearer <redacted>'
    >>> redactor.text(r'{"error_message": "key \\u0073k-live-7f3a9c%32e5b8d refused"}')
    '{"error_message": "key <redacted> refused"}'
    >>> redactor.text("cut short: sk-live-7f3a…")
    'cut short: <redacted>…'
    >>> redactor.text("nothing to see")
    'nothing to see'
    """

    __slots__ = ("__weakref__", "_answer_markers", "_byte_markers", "_bytes", "_ends", "_markers",
                 "_text")

    def __init__(self, key: str) -> None:
        whole, suffix = _patterns(key)
        self._text = re.compile(whole if suffix is None else f"{whole}|{suffix}")
        # On raw bytes (where a raw non-ASCII character is its UTF-8 bytes) the key whole or cut
        # at its end: a suffix alone costs ten times more to look for, and whatever text is
        # made of a body goes through :meth:`text` before it leaves.
        self._bytes = re.compile(whole.encode("utf-8"))
        # Any match holds an escape, or the key's first or last characters as they are: a few
        # substring searches tell whether the regular expression needs to run at all. ("&"
        # stands for an entity's "&#": a one-character search is a quarter of the cost.)
        size = min(len(key), MIN_FRAGMENT if len(key) >= _FRAGMENTS_FROM else len(key))
        self._ends = (key[:size], key[-size:])
        self._markers = (*self._ends, "\\", "%", "&")
        # Bytes are searched through their Latin-1 view (one character per byte, the same
        # positions): ``marker in value`` on bytes first tries ``marker`` as a byte value, and
        # builds and clears a TypeError each time, five times the cost of the search itself.
        self._byte_markers = tuple(
            marker.encode("utf-8").decode("latin-1") for marker in self._markers
        )
        # For a whole answer: text (headers, reason) and a body's Latin-1 view in one string,
        # searched for the markers of either form (the same ones when the key is ASCII).
        self._answer_markers = tuple(dict.fromkeys((*self._markers, *self._byte_markers)))

    def __repr__(self) -> str:
        return "Redactor(<key hidden>)"

    def may_show_key(self, value: str) -> bool:
        """False when ``value`` surely does not show the key: a few substring searches, no
        regular expression. True means only "look closer" (:meth:`shows_key`, :meth:`text`)."""
        # A plain loop, not any() over a generator: this runs on every answer of every request.
        for marker in self._markers:  # noqa: SIM110
            if marker in value:
                return True
        return False

    _may_hold = may_show_key  # the name used inside; one function, no forwarding call

    def text(self, value: str) -> str:
        """``value`` with every appearance of the key (or a long fragment of it) replaced."""
        return self._text.sub(REDACTED, value) if self._may_hold(value) else value

    def shows_key(self, value: str) -> bool:
        """Whether ``value`` shows the key or a long fragment of it, in any encoding."""
        return self._may_hold(value) and self._text.search(value) is not None

    def body(self, value: bytes) -> bytes:
        """Raw bytes with the key replaced in every encoding; the common case costs a few searches.

        A replacement inside a JSON string keeps the document valid: ``<redacted>`` holds
        neither a quote nor a backslash.
        """
        return self._bytes.sub(_REDACTED_BYTES, value) if self.body_may_show_key(value) else value

    def body_may_show_key(self, value: bytes) -> bool:
        """False when raw bytes surely do not show the key: a few substring searches."""
        view = value.decode("latin-1")
        for marker in self._byte_markers:  # noqa: SIM110 (a plain loop: every answer runs it)
            if marker in view:
                return True
        return False

    def headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """``headers`` as they are when no name or value shows the key, else a copy (matching
        names case-insensitively, as every answer's headers do) with the key hidden in each."""
        if not self.shows_key("\n".join([*headers.keys(), *headers.values()])):
            return headers
        return CIMultiDictProxy(CIMultiDict(
            (self.text(name), self.text(value)) for name, value in headers.items()
        ))

    def answer_may_show_key(
        self, body: bytes, headers: Mapping[str, str], reason: str | None
    ) -> bool:
        """False when an answer surely shows the key nowhere: not in its body, a header's name
        or value, nor its reason phrase. One string and a few substring searches: the cost of
        an ordinary answer. True means "look closer" (:meth:`body`, :meth:`shows_key`).

        >>> redactor = Redactor("sk-live-7f3a9c2e5b8d")
        >>> redactor.answer_may_show_key(b'{"ok":1}', {"Date": "Mon"}, "Accepted")
        False
        >>> redactor.answer_may_show_key(b'{"error":"sk-live-7f3a9c2e5b8d"}', {}, None)
        True
        """
        # A list display, not itertools.chain: a quarter less work on every answer.
        text = "\n".join([*headers.keys(), *headers.values(), reason or "", body.decode("latin-1")])
        for marker in self._answer_markers:  # noqa: SIM110 (a plain loop: every answer runs it)
            if marker in text:
                return True
        return False

    def exception_shows_key(self, exc: BaseException) -> bool:
        """Whether any text of ``exc`` or of its causes (str, repr, args) shows the key."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            try:
                texts = [str(current), repr(current), repr(current.args)]
            except Exception:  # an exception whose str() fails: assume the worst
                return True
            if any(self.shows_key(text) for text in texts):
                return True
            current = current.__cause__ or current.__context__
        return False


class HeadersOnRead(Mapping[str, str]):
    """An answer's headers, looked at for the key when first read rather than when they came.

    The headers of a success reach the caller inside its result (``Accepted.headers``, to log a
    request ID), and most callers never read them: joining every answer's header names and
    values to look for the key was a tenth of the SDK's own work per request. The first read of
    any kind (a lookup, iteration, ``len``, ``repr``, a copy or a pickle) sees them with the key
    hidden, exactly as a check on arrival would have made them; the redactor is dropped then.

    >>> headers = HeadersOnRead({"X-Echo": "Bearer sk-live-7f3a9c2e5b8d"}, Redactor("sk-live-7f3a9c2e5b8d"))
    >>> headers["X-Echo"]
    'Bearer <redacted>'
    """

    __slots__ = ("_headers", "_redactor")

    def __init__(self, headers: Mapping[str, str], redactor: Redactor | None) -> None:
        self._headers = headers
        self._redactor = redactor  # None: looked at already (or nothing to look for)

    def _checked(self) -> Mapping[str, str]:
        redactor = self._redactor
        if redactor is not None:
            self._headers = redactor.headers(self._headers)
            self._redactor = None
        return self._headers

    def __getitem__(self, name: str) -> str:
        return self._checked()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._checked())

    def __len__(self) -> int:
        return len(self._checked())

    def __contains__(self, name: object) -> bool:
        return name in self._checked()

    # A header may come more than once: the views are the headers' own (every value), not
    # Mapping's (the first value of each name).
    def keys(self) -> KeysView[str]:
        return self._checked().keys()

    def items(self) -> ItemsView[str, str]:
        return self._checked().items()

    def values(self) -> ValuesView[str]:
        return self._checked().values()

    def getall(self, name: str) -> list[str]:
        """Every value of header ``name``, in order (``KeyError`` when there is none)."""
        values = [value for key, value in self.items() if key.lower() == name.lower()]
        if not values:
            raise KeyError(name)
        return values

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HeadersOnRead):
            other = other._checked()
        return bool(self._checked() == other)

    __hash__ = None  # type: ignore[assignment]  # a mapping: unhashable, as Mapping is

    def __repr__(self) -> str:
        return repr(self._checked())

    def __getstate__(self) -> _Items:
        # Anything that asks for the state (not only pickle, which uses __reduce__) gets the
        # headers checked, never the redactor.
        return list(self._checked().items())

    def __reduce__(self) -> tuple[Callable[[_Items], HeadersOnRead], tuple[_Items]]:
        # The checked headers, never the redactor: a pickle (or a copy) must not carry the key.
        return _checked_headers, (self.__getstate__(),)


_Items = list[tuple[str, str]]


def _checked_headers(items: _Items) -> HeadersOnRead:
    return HeadersOnRead(CIMultiDictProxy(CIMultiDict(items)), None)


# Every live client's redactor, for the log filter; a client gone is forgotten with it.
_LIVE: weakref.WeakSet[Redactor] = weakref.WeakSet()


def register(redactor: Redactor) -> None:
    """Have the log filter hide this redactor's key too."""
    _LIVE.add(redactor)


def redact_all(text: str, redactors: Iterable[Redactor] | None = None) -> str:
    """``text`` with every live client's key hidden."""
    for redactor in list(_LIVE) if redactors is None else redactors:
        text = redactor.text(text)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites a record's message with every live key hidden (arguments formatted first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _LIVE:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's business, not ours
            return True
        clean = redact_all(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set: the traceback is redacted here, once.
            record.exc_text = redact_all(_FORMATTER.formatException(record.exc_info))
        return True


_FORMATTER: Final = logging.Formatter()


_FILTER: Final = _RedactingFilter()


def install_log_filter(logger: logging.Logger) -> None:
    """Put the redacting filter on ``logger`` (once)."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
