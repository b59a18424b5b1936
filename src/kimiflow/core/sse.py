"""Server-sent events: a pure, incremental decoder for ``text/event-stream`` bodies.

Bytes go in as they arrive from the network, complete events come out. No I/O, no clock: the
transports feed it and decide what to do with the events (``data: [DONE]`` is just an event here).

The parsing rules are the WHATWG HTML "event stream interpretation" rules:

- lines end in CR, LF or CRLF, and a CR at the end of one feed followed by an LF at the start of
  the next is ONE line end; nothing else splits lines (not U+2028, not NEL — ``str.splitlines``
  would, which is why it is never used here);
- UTF-8 is decoded per line, after splitting, so a character cut across feeds arrives intact;
  invalid bytes become U+FFFD; one BOM at the very start of the stream is dropped;
- ``:`` starts a comment line (keep-alives), which is ignored;
- ``name: value`` — one space after the colon is removed; a line without a colon is a field with
  an empty value; unknown field names are ignored;
- ``data`` lines accumulate and are joined with ``"\\n"``; a blank line dispatches the event, but
  only if at least one ``data`` line was seen (otherwise the block is dropped);
- ``id`` is ignored when it contains NUL; ``retry`` only when it is all ASCII digits;
- an event that is not followed by its blank line when the stream ends is discarded.

Beyond the standard, one limit: a line, or an event's data, longer than ``max_event_size`` bytes
(16 MiB by default) is a ``StreamError``. Without it an upstream sending one endless line makes
the decoder buffer everything it sends.

Speed matters: this runs on every chunk of every stream. The common case — a feed containing only
LF line ends, with ``data: `` lines followed by blank lines — is split by one C-level
``bytes.split`` and costs a few hundred nanoseconds per event. CR line ends are normalised to LF
once per feed (only when a CR is present), so there is a single code path for line handling.
"""

from __future__ import annotations

import msgspec

from kimiflow.core.errors import StreamError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEDecoder", "ServerSentEvent"]

DEFAULT_MAX_EVENT_SIZE = 16 * 2**20
"""Bytes a single line or event may hold; a Kimi chunk is a few hundred bytes, a long tool call some kB."""

_BOM = b"\xef\xbb\xbf"
_DATA_PREFIX = b"data: "
_COLON = 0x3A


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched server-sent event.

    ``data`` is the event's ``data`` lines joined by ``"\\n"``. ``id`` and ``retry`` are the
    stream's current values when the event was dispatched: like a browser's ``EventSource``, a
    ``id:`` or ``retry:`` field stays in force for later events until the server changes it.

    A msgspec struct rather than a dataclass: it is built in C (several times faster per event)
    and, holding only strings and ints, is not tracked by the garbage collector.

    >>> ServerSentEvent(data='{"a": 1}')
    ServerSentEvent(data='{"a": 1}', event='message', id=None, retry=None)
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Pure incremental WHATWG event-stream parser. No I/O.

    Feed it the body bytes in whatever pieces the network delivers; it returns the events each
    piece completes. Call :meth:`close` at end of stream.

    >>> decoder = SSEDecoder()
    >>> decoder.feed(b'data: {"x": 1}\\n\\ndata: [DO')
    [ServerSentEvent(data='{"x": 1}', event='message', id=None, retry=None)]
    >>> decoder.feed(b"NE]\\n\\n")[0].data
    '[DONE]'
    >>> decoder.close()
    []
    """

    __slots__ = (
        "_bom_prefix",
        "_closed",
        "_comment_only",
        "_comments_seen",
        "_cr_pending",
        "_data",
        "_data_size",
        "_event_type",
        "_fields_seen",
        "_irregular",
        "_last_id",
        "_max_event_size",
        "_pending",
        "_pending_size",
        "_retry",
    )

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if not isinstance(max_event_size, int) or isinstance(max_event_size, bool) or max_event_size < 1:
            raise ValueError(f"max_event_size={max_event_size!r} is invalid: use a positive number of bytes")
        self._max_event_size = max_event_size
        # Bytes seen so far at the very start of the stream while we cannot yet tell whether
        # they are a BOM (a BOM can itself be cut across feeds); None once decided.
        self._bom_prefix: bytes | None = b""
        # The previous feed ended in CR: an LF starting the next feed belongs to that line end.
        self._cr_pending = False
        # Pieces of the current unterminated line; joined once when its line end arrives, so a
        # long line spread over many feeds costs linear, not quadratic, time.
        self._pending: list[bytes] = []
        self._pending_size = 0
        # Raw bytes of the current event's data lines (decoded once, at dispatch).
        self._data: list[bytes] = []
        self._data_size = 0  # bytes in ``_data`` as of the end of the last feed
        self._event_type = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._comment_only = False
        self._comments_seen = 0
        self._fields_seen = 0  # non-comment lines handled by the slow path
        self._closed = False
        # One flag for the rare states above (closed, BOM undecided, CR pending) so the common
        # feed pays a single check for all of them.
        self._irregular = True

    # -- the caller's view of stream health ------------------------------------------------

    @property
    def saw_data_since_last_event(self) -> bool:
        """True when part of an event has arrived but has not been dispatched yet.

        That is: ``data`` lines not yet followed by their blank line, or an unterminated line
        that is not a comment. Checked after :meth:`close`, it tells a stream that was cut in
        the middle of an event from one that ended cleanly between events.
        """
        if self._data or self._bom_prefix:
            return True
        pending = self._pending
        return bool(pending) and pending[0][0] != _COLON

    @property
    def last_activity_was_comment(self) -> bool:
        """True when the most recent non-empty feed held only comment lines (and line ends).

        Keep-alive comments (``: ping``) prove the connection is alive but not that the stream is
        moving; an idle timeout should not be reset by a feed for which this is True.
        """
        return self._comment_only

    @property
    def comments_seen(self) -> int:
        """How many complete comment lines the stream has carried so far."""
        return self._comments_seen

    @property
    def last_event_id(self) -> str | None:
        """The stream's last event id (``None`` if the server never sent ``id:``)."""
        return self._last_id

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume the next piece of the body; return the events it completes (often none).

        ``chunk`` may be any slice of the stream: a single byte, half a UTF-8 character, or
        many events at once.
        """
        if len(chunk) > self._max_event_size:
            # Rare: fed in pieces no longer than the cap, the size accounting below stays exact
            # (the decoder gives the same events however the bytes are cut).
            return self._feed_in_pieces(chunk)
        if self._irregular:
            chunk = self._settle(chunk)
        if b"\r" in chunk:
            # A lone CR and CRLF both end a line; after this the only line end is LF. A final
            # CR may be the first half of a CRLF cut by the network: remember it.
            self._cr_pending = self._irregular = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        lines = chunk.split(b"\n")
        pending = self._pending
        data = self._data
        if (
            len(lines) == 3
            and not lines[2]
            and not lines[1]
            and not pending
            and not data
            and lines[0].startswith(_DATA_PREFIX)
        ):
            # Exactly one complete one-line data event: what a slow stream delivers per socket
            # read. Same result as the loop below, with a third of the bytecode.
            self._comment_only = False
            event_type = self._event_type
            if event_type:
                self._event_type = ""
            return [
                ServerSentEvent(
                    str(lines[0][6:], "utf-8", "replace"), event_type or "message", self._last_id, self._retry
                )
            ]
        tail = lines.pop()  # the unterminated rest (b"" when the chunk ends with a line end)
        if not lines:
            # No line end in this piece: part of a long line (or a slow trickle).
            if tail:
                pending.append(tail)
                self._pending_size += len(tail)
                if self._pending_size > self._max_event_size:
                    self._refuse("line")
                self._comment_only = pending[0][0] == _COLON
            return []
        data_lines_before = len(data)
        carried = self._data_size + self._pending_size if (data or pending) else 0
        fields_before = self._fields_seen
        events: list[ServerSentEvent] = []
        if pending:
            if self._pending_size + len(lines[0]) > self._max_event_size:
                self._refuse("line")
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending.clear()
            self._pending_size = 0
        append_data = data.append
        append_event = events.append
        event_class = ServerSentEvent
        for line in lines:
            if not line:
                if data:
                    raw = data[0] if len(data) == 1 else b"\n".join(data)
                    append_event(
                        event_class(
                            str(raw, "utf-8", "replace"),
                            self._event_type or "message",
                            self._last_id,
                            self._retry,
                        )
                    )
                    data.clear()
                    self._event_type = ""
                elif self._event_type:
                    self._event_type = ""
            elif line.startswith(_DATA_PREFIX):
                append_data(line[6:])
            else:
                self._field_line(line)
        if tail:
            pending.append(tail)
            self._pending_size = len(tail)
        if carried and events and carried + len(chunk) > self._max_event_size:
            self._check_carried_event(lines)
        if data:
            # An event still open at the end of the feed: count only the lines this feed added, so
            # an event spread over many feeds costs linear time.
            if events:
                self._data_size = sum(map(len, data))
            else:
                self._data_size += sum(map(len, data[data_lines_before:]))
            if self._data_size > self._max_event_size:
                self._refuse("event")
        elif self._data_size:
            self._data_size = 0

        # Progress = an event, a new data line, a non-comment field, or a non-comment partial
        # line. Computed per feed from counters so the hot loop does no extra work.
        self._comment_only = not (
            events
            or len(data) != data_lines_before
            or self._fields_seen != fields_before
            or (pending and pending[0][0] != _COLON)
        )
        return events

    def close(self) -> list[ServerSentEvent]:
        """Signal end of stream. Returns ``[]``: an event still missing its blank line is discarded.

        Per the WHATWG rules only a blank line dispatches an event, so anything buffered is
        dropped; check :attr:`saw_data_since_last_event` (before or after calling this) to learn
        whether the stream was cut in the middle of an event.
        """
        self._closed = self._irregular = True
        return []

    # -- the slow paths --------------------------------------------------------------------

    def _settle(self, chunk: bytes) -> bytes:
        """Handle the rare states before a feed: closed, BOM not yet decided, CR pending."""
        if self._closed:
            raise ValueError("SSEDecoder.feed() called after close(); create a new decoder per stream")
        if not chunk:
            return chunk
        if self._bom_prefix is not None:
            chunk = self._strip_bom(chunk)
            if not chunk:
                self._comment_only = False
                return chunk
        if self._cr_pending:
            self._cr_pending = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]  # the LF half of a CRLF whose CR ended the previous feed
        self._irregular = False
        return chunk

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop one UTF-8 BOM from the start of the stream, even if it arrives in pieces."""
        assert self._bom_prefix is not None
        start = self._bom_prefix + chunk
        if len(start) < len(_BOM) and _BOM.startswith(start):
            self._bom_prefix = start
            return b""
        self._bom_prefix = None
        return start[len(_BOM) :] if start.startswith(_BOM) else start

    def _feed_in_pieces(self, chunk: bytes) -> list[ServerSentEvent]:
        step = self._max_event_size
        events: list[ServerSentEvent] = []
        for start in range(0, len(chunk), step):
            events += self.feed(chunk[start : start + step])
        return events

    def _check_carried_event(self, lines: list[bytes]) -> None:
        """Refuse the first event of a feed if, with the data it carried in, it is above the cap.

        Only called when that is possible at all (carried bytes + this feed > cap), so the
        common feed never re-reads its lines. ``lines`` are this feed's lines (the carried
        partial line already joined in); the first blank one dispatched the carried event.
        """
        size = self._data_size
        for line in lines:
            if not line:
                break
            name, _, value = line.partition(b":")
            if name == b"data":
                size += len(value) - (value[:1] == b" ")
        if size > self._max_event_size:
            self._refuse("event")

    def _refuse(self, what: str) -> None:
        limit = self._max_event_size
        shown = f"{limit >> 20} MiB" if limit % 2**20 == 0 else f"{limit:,} bytes"
        # Let go of the buffered bytes now: the error (and this decoder) may be kept for a while.
        self._pending.clear()
        self._data.clear()
        self._pending_size = self._data_size = 0
        raise StreamError(f"a server-sent event {what} is longer than {shown} (SSEDecoder max_event_size): "
                          "the upstream is not sending a normal event stream")

    def _field_line(self, line: bytes) -> None:
        """Apply a non-blank line that is not a plain ``data: `` line."""
        if line[0] == _COLON:
            self._comments_seen += 1
            return
        self._fields_seen += 1
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value and value.isdigit():  # bytes.isdigit() is ASCII-only
            self._retry = int(value)
        # Any other field name is ignored, as the standard requires.
