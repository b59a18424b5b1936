"""The SSE decoder follows the WHATWG event-stream rules, whatever pieces the bytes arrive in."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimiflow.core.errors import StreamError
from kimiflow.core.sse import ServerSentEvent, SSEDecoder

BOM = "\ufeff".encode()


def decode_all(*pieces: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events


def byte_by_byte(stream: bytes) -> list[ServerSentEvent]:
    return decode_all(*(stream[i : i + 1] for i in range(len(stream))))


def datas(events: list[ServerSentEvent]) -> list[str]:
    return [e.data for e in events]


# --- property: any chunking of a valid stream decodes to the events of the uncut stream ---------

# Text for values: anything but CR and LF (which would end the line), weighted towards the
# characters that break naive parsers: CJK, emoji, U+2028/2029, NEL, VT, FF, NUL, a stray BOM.
_tricky = st.sampled_from(["你", "好", "🙂", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x00", "\ufeff", ":", " "])
_value = st.text(
    alphabet=st.one_of(_tricky, st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))),
    max_size=12,
)


@dataclass
class Line:
    text: str  # the line without its line end


def _data_line(value: str, form: int) -> tuple[Line, str]:
    """A data line in one of its spellings, and the value the decoder must extract."""
    if form == 0:
        return Line("data: " + value), value
    if form == 1:
        return Line("data:" + value), value[1:] if value.startswith(" ") else value
    if form == 2:
        return Line("data:  " + value), " " + value
    return Line("data"), ""


_item = st.one_of(
    st.tuples(st.just("data"), _value, st.integers(0, 3)),
    st.tuples(st.just("event"), _value, st.integers(0, 1)),
    st.tuples(st.just("id"), _value, st.integers(0, 1)),
    st.tuples(st.just("retry"), st.one_of(st.from_regex(r"\A[0-9]{1,6}\Z"), _value), st.just(0)),
    st.tuples(st.just("comment"), _value, st.just(0)),
    st.tuples(st.sampled_from(["foo", "Data", "data ", "ID"]), _value, st.just(0)),
)


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    """A random valid event stream and, computed independently of the decoder, its events."""
    blocks = draw(st.lists(st.lists(_item, max_size=5), max_size=6))
    trailing = draw(st.lists(_item, max_size=3))  # an unterminated last block: must be discarded
    lines: list[Line] = []
    expected: list[ServerSentEvent] = []
    last_id: str | None = None
    retry: int | None = None
    for block_index, block in enumerate([*blocks, trailing]):
        data: list[str] = []
        event_type = ""
        for kind, value, form in block:
            if kind == "data":
                line, extracted = _data_line(value, form)
                lines.append(line)
                data.append(extracted)
            elif kind == "event":
                lines.append(Line("event: " + value if form == 0 else "event"))
                event_type = value if form == 0 else ""
            elif kind == "id":
                lines.append(Line("id: " + value if form == 0 else "id"))
                new_id = value if form == 0 else ""
                if "\x00" not in new_id:
                    last_id = new_id
            elif kind == "retry":
                lines.append(Line("retry: " + value))
                if value and all(c in "0123456789" for c in value):
                    retry = int(value)
            elif kind == "comment":
                lines.append(Line(":" + value))
            else:
                lines.append(Line(f"{kind}: {value}"))
        if block_index < len(blocks):
            lines.append(Line(""))
            if data:
                expected.append(ServerSentEvent("\n".join(data), event_type or "message", last_id, retry))
    # Trailing-block lines still get line ends; only the dispatching blank line is missing.
    ends = draw(st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=len(lines), max_size=len(lines)))
    out: list[str] = []
    previous_end = ""
    for line, end in zip(lines, ends, strict=True):
        if previous_end == "\r" and line.text == "" and end == "\n":
            end = "\r\n"  # CR then a blank LF line would read as one CRLF: not the stream we mean
        out.append(line.text + end)
        previous_end = end
    prefix = BOM if draw(st.booleans()) else b""
    return prefix + "".join(out).encode(), expected


@st.composite
def cuts(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    points = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=20))))
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_chunking_decodes_to_the_events_of_the_uncut_stream(data: st.DataObject) -> None:
    stream, expected = data.draw(event_streams())
    assert decode_all(stream) == expected
    assert decode_all(*data.draw(cuts(stream))) == expected


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams())
def test_one_byte_pieces_decode_like_the_whole_stream(case: tuple[bytes, list[ServerSentEvent]]) -> None:
    stream, expected = case
    assert byte_by_byte(stream) == expected


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams())
def test_pieces_cut_at_event_boundaries_decode_like_the_whole_stream(
    case: tuple[bytes, list[ServerSentEvent]],
) -> None:
    """Each piece ends after a blank line: the shape a server flushing per event produces."""
    stream, expected = case
    pieces = [piece + b"\n\n" for piece in stream.split(b"\n\n")]
    pieces[-1] = pieces[-1][:-2]
    assert decode_all(*pieces) == expected


def test_one_event_per_feed_keeps_state_from_earlier_feeds() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: delta\nid: 9\nretry: 10\n") == []
    assert decoder.feed(b"data: a\n\n") == [ServerSentEvent("a", "delta", "9", 10)]
    assert decoder.feed(b"data: b\n\n") == [ServerSentEvent("b", "message", "9", 10)]
    assert decoder.feed(b"data: c\n") == []
    assert decoder.feed(b"data: d\n\n") == [ServerSentEvent("c\nd", "message", "9", 10)]
    assert decoder.feed(b"data: e") == []
    assert decoder.feed(b"data: f\n\n") == [ServerSentEvent("edata: f", "message", "9", 10)]
    assert decoder.feed(b"data: \xe4\xbd\xa0\n\n") == [ServerSentEvent("你", "message", "9", 10)]
    assert not decoder.last_activity_was_comment


def test_every_two_way_split_of_a_mixed_stream() -> None:
    """Cut at every byte: inside CRLF, inside multi-byte characters, inside the BOM."""
    stream = BOM + "data: 你好🙂\r\n: ping\revent: delta\nid: 7\r\ndata: x\u2028y\r\n\r\ndata: [DONE]\n\n".encode()
    expected = [ServerSentEvent("你好🙂\nx\u2028y", "delta", "7"), ServerSentEvent("[DONE]", "message", "7")]
    assert decode_all(stream) == expected
    for i in range(len(stream) + 1):
        assert decode_all(stream[:i], stream[i:]) == expected, i


# --- unit tests, one per rule ------------------------------------------------------------------


def test_kimi_event_sequence_and_done_is_just_an_event() -> None:
    events = decode_all(b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n')
    assert datas(events) == ['{"a":1}', '{"a":2}', "[DONE]"]
    assert all(e.event == "message" and e.id is None and e.retry is None for e in events)


@pytest.mark.parametrize("end", ["\n", "\r", "\r\n"])
def test_each_line_end_kind(end: str) -> None:
    stream = f"data: a{end}data: b{end}{end}data: c{end}{end}".encode()
    assert datas(decode_all(stream)) == ["a\nb", "c"]


def test_cr_at_end_of_feed_and_lf_at_start_of_next_are_one_line_end() -> None:
    assert datas(decode_all(b"data: a\r", b"\ndata: b\r\n\r\n")) == ["a\nb"]
    # ...but a CR then a lone LF in the same position when NOT adjacent are two line ends.
    assert datas(decode_all(b"data: a\r", b"\r\n")) == ["a"]


def test_cr_then_empty_feed_then_lf_is_still_one_line_end() -> None:
    assert datas(decode_all(b"data: a\r", b"", b"\ndata: b\n\n")) == ["a\nb"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
def test_unicode_line_separators_do_not_split_lines(separator: str) -> None:
    text = f"one{separator}two"
    assert datas(decode_all(f"data: {text}\n\n".encode())) == [text]


def test_utf8_character_cut_across_feeds_is_intact() -> None:
    encoded = "data: 你🙂\n\n".encode()
    cut = encoded.index("🙂".encode()) + 2  # in the middle of the 4-byte emoji
    assert datas(decode_all(encoded[:cut], encoded[cut:])) == ["你🙂"]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert datas(decode_all(b"data: a\xffb\xe4\n\n")) == ["a\ufffdb\ufffd"]


def test_leading_bom_is_dropped_even_when_cut() -> None:
    stream = BOM + b"data: x\n\n"
    assert datas(decode_all(stream)) == ["x"]
    assert datas(decode_all(stream[:1], stream[1:2], stream[2:])) == ["x"]


def test_only_one_bom_and_only_at_stream_start() -> None:
    # A second BOM becomes part of the field name, so the line is an unknown field.
    assert decode_all(BOM + BOM + b"data: x\n\n") == []
    # A BOM later in the stream is ordinary data.
    assert datas(decode_all(b"data: \xef\xbb\xbfx\n\n")) == ["\ufeffx"]


def test_stream_starting_with_a_bom_prefix_that_is_not_a_bom() -> None:
    assert datas(decode_all(b"\xef", b"\xbbdata: x\n\n")) == []  # garbage field name: ignored
    assert datas(decode_all(b"\xefdata: x\n\ndata: y\n\n")) == ["y"]


def test_comment_lines_are_ignored_and_counted() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b": ping\n:\n\ndata: x\n: mid-event comment\n\n") == [ServerSentEvent("x")]
    assert decoder.comments_seen == 3


def test_field_without_colon_is_field_with_empty_value() -> None:
    assert datas(decode_all(b"data\n\n")) == [""]
    assert datas(decode_all(b"data\ndata\n\n")) == ["\n"]
    assert decode_all(b"event\ndata: x\n\n")[0].event == "message"


def test_only_one_leading_space_is_removed() -> None:
    assert datas(decode_all(b"data:x\n\ndata: x\n\ndata:  x\n\ndata: x \n\n")) == ["x", "x", " x", "x "]


def test_multi_line_data_is_joined_with_lf() -> None:
    assert datas(decode_all(b"data: {\ndata: \"a\": 1\ndata: }\n\n")) == ['{\n"a": 1\n}']


def test_blank_line_without_data_does_not_dispatch_and_resets_event_type() -> None:
    events = decode_all(b"event: custom\n\n\n\ndata: x\n\n")
    assert events == [ServerSentEvent("x", "message")]


def test_event_field_sets_type_for_one_event() -> None:
    events = decode_all(b"event: error\ndata: {}\n\ndata: y\n\n")
    assert [e.event for e in events] == ["error", "message"]


def test_id_persists_and_is_ignored_when_it_contains_nul() -> None:
    events = decode_all(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\x003\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "1", ""]


def test_retry_is_digits_only_and_persists() -> None:
    events = decode_all(b"retry: 1a\ndata: a\n\nretry: 2500\ndata: b\n\nretry:\ndata: c\n\nretry: -1\ndata: d\n\n")
    assert [e.retry for e in events] == [None, 2500, 2500, 2500]
    assert decode_all("retry: ١٢\ndata: x\n\n".encode())[0].retry is None  # non-ASCII digits


def test_unknown_and_wrongly_cased_fields_are_ignored() -> None:
    assert decode_all(b"Data: x\nfoo: bar\ndata : y\n\n") == []


def test_event_missing_its_blank_line_at_eof_is_discarded_and_reported() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\n") == [ServerSentEvent("a")]
    assert decoder.saw_data_since_last_event
    assert decoder.close() == []
    assert decoder.saw_data_since_last_event


def test_unterminated_line_counts_as_data_but_unterminated_comment_does_not() -> None:
    cut_mid_line = SSEDecoder()
    cut_mid_line.feed(b'data: {"a":1}\n\ndata: {"a"')
    assert cut_mid_line.saw_data_since_last_event
    cut_in_comment = SSEDecoder()
    cut_in_comment.feed(b'data: {"a":1}\n\n: pin')
    assert not cut_in_comment.saw_data_since_last_event


def test_clean_end_between_events_reports_no_pending_data() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: [DONE]\n\n")
    assert decoder.close() == []
    assert not decoder.saw_data_since_last_event


def test_keep_alive_comments_are_not_progress() -> None:
    decoder = SSEDecoder()
    decoder.feed(b": keep-alive\n\n")
    assert decoder.last_activity_was_comment
    decoder.feed(b": trick")  # a comment arriving in pieces is still a comment
    assert decoder.last_activity_was_comment
    decoder.feed(b"le\n")
    assert decoder.last_activity_was_comment
    decoder.feed(b"d")  # one byte of a data line is progress (slow trickle)
    assert not decoder.last_activity_was_comment
    decoder.feed(b"ata: x\n")
    assert not decoder.last_activity_was_comment
    assert decoder.feed(b"\n") == [ServerSentEvent("x")]
    assert not decoder.last_activity_was_comment
    decoder.feed(b": ping\nid: 3\n")  # a real field next to a comment is progress
    assert not decoder.last_activity_was_comment


def test_feed_after_close_is_a_clear_error() -> None:
    decoder = SSEDecoder()
    decoder.close()
    with pytest.raises(ValueError, match="new decoder per stream"):
        decoder.feed(b"data: x\n\n")


def test_empty_feed_is_a_no_op() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: x\n\n") == [ServerSentEvent("x")]


def test_line_spanning_many_feeds_costs_linear_time() -> None:
    """20,000 feeds of one 1.3 MB line: joined once (quadratic re-joining would take many seconds)."""
    payload = b"x" * 64
    decoder = SSEDecoder()
    start = time.perf_counter()
    decoder.feed(b"data: ")
    for _ in range(20_000):
        assert decoder.feed(payload) == []
    events = decoder.feed(b"\n\n")
    elapsed = time.perf_counter() - start
    assert len(events) == 1 and len(events[0].data) == 64 * 20_000
    assert elapsed < 1.0, f"{elapsed:.2f}s for a long line: buffering is not linear"


def test_event_is_a_value_with_defaults() -> None:
    event = ServerSentEvent(data="x")
    assert (event.event, event.id, event.retry) == ("message", None, None)
    assert event == ServerSentEvent("x", "message", None, None)
    assert "data='x'" in repr(event)


# -- the size cap: an endless line or event is refused, not buffered ---------------------------------


def test_default_cap_is_16_mib() -> None:
    from kimiflow.core.sse import DEFAULT_MAX_EVENT_SIZE

    assert DEFAULT_MAX_EVENT_SIZE == 16 * 2**20


def test_a_line_growing_past_the_cap_across_feeds_is_a_stream_error() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    decoder.feed(b"data: ")
    for _ in range(9):
        assert decoder.feed(b"x" * 100) == []
    with pytest.raises(StreamError, match=r"line is longer than 1,000 bytes \(SSEDecoder max_event_size\)"):
        decoder.feed(b"x" * 100)
    assert decoder._pending == []  # the buffered bytes are let go at once


def test_a_line_completed_past_the_cap_is_refused_even_when_no_piece_was() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    decoder.feed(b"data: " + b"x" * 900)
    with pytest.raises(StreamError, match="line is longer"):
        decoder.feed(b"x" * 200 + b"\n\n")


def test_one_feed_holding_a_line_above_the_cap_is_refused() -> None:
    with pytest.raises(StreamError, match="line is longer"):
        SSEDecoder(max_event_size=1000).feed(b"data: " + b"x" * 2000 + b"\n\n")


def test_an_event_of_many_short_data_lines_past_the_cap_is_refused() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    for _ in range(9):
        assert decoder.feed(b"data: " + b"y" * 100 + b"\n") == []
    with pytest.raises(StreamError, match=r"event is longer than 1,000 bytes"):
        decoder.feed(b"data: " + b"y" * 100 + b"\ndata: more\n")


def test_events_and_lines_up_to_the_cap_pass_and_the_count_restarts_per_event() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    for _ in range(5):  # 5 events of 900 bytes each, each spread over two feeds
        decoder.feed(b"data: " + b"z" * 450)
        assert decoder.feed(b"z" * 450 + b"\n\n") == [ServerSentEvent("z" * 900)]
    events = decoder.feed(b"data: " + b"a" * 400 + b"\ndata: " + b"b" * 400 + b"\n\n")
    assert events == [ServerSentEvent("a" * 400 + "\n" + "b" * 400)]


def test_the_cap_is_named_in_mib_and_must_be_positive() -> None:
    decoder = SSEDecoder(max_event_size=2**20)
    with pytest.raises(StreamError, match="longer than 1 MiB"):
        decoder.feed(b"data: " + b"x" * (2**20 + 1))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_event_size"):
            SSEDecoder(max_event_size=bad)  # type: ignore[arg-type]


def refused_by_cap(stream: bytes, cap: int) -> bool:
    """The model: a line (line end excluded) or an event's data values above ``cap`` bytes is refused."""
    event_size = 0
    *lines, tail = stream.split(b"\n")
    if len(tail) > cap:  # an unterminated last line counts as a line, but is not data yet
        return True
    for line in lines:
        if len(line) > cap:
            return True
        if not line:
            event_size = 0
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            event_size += len(value) - (value[:1] == b" ")
            if event_size > cap:
                return True
    return False


def decode_capped(pieces: list[bytes], cap: int) -> list[ServerSentEvent] | None:
    decoder = SSEDecoder(max_event_size=cap)
    events: list[ServerSentEvent] = []
    try:
        for piece in pieces:
            events.extend(decoder.feed(piece))
    except StreamError:
        return None
    return events


_CAPPED_LINES = st.sampled_from([b"data: abc", b"data:defgh", b"data", b": keep-alive", b"event: e", b"", b"",
                                 b"data: " + b"x" * 14, b"id: 1"])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CAPPED_LINES, max_size=25), st.integers(8, 40), st.data())
def test_the_cap_refuses_the_same_streams_however_they_are_cut(lines: list[bytes], cap: int,
                                                              data: st.DataObject) -> None:
    stream = b"\n".join(lines)
    expected = None if refused_by_cap(stream, cap) else decode_capped([stream], 10**9)
    assert decode_capped([stream], cap) == expected
    assert decode_capped(data.draw(cuts(stream)), cap) == expected
    assert decode_capped([stream[i : i + 1] for i in range(len(stream))], cap) == expected
