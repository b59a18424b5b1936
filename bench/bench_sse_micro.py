"""Micro-benchmark: CPU per event of the SSE decoder (and decoder + chunk decode + accumulate).

Builds a Kimi-shaped stream (role chunk, N content chunks with mixed CJK/ASCII text, the final
chunk with usage inside the choice, ``[DONE]``), cuts it into 16 KiB pieces as a socket read would,
and reports CPU microseconds per event (``time.process_time``, so other processes on the machine
do not inflate it) for:

- naive:      ``bytes.split(b"\\n")`` per piece with a carried-over partial line, ``data: `` lines
              sliced off; no event objects, no decoding (a floor, not a correct parser);
- decoder:    ``SSEDecoder.feed`` (full WHATWG rules, events out);
- naive+json: the naive loop plus ``json.loads`` of every data line (the shape of a raw aiohttp
              ``async for line in resp.content`` loop, minus aiohttp);
- kimiflow:   decoder + msgspec decode into ``ChatCompletionChunk`` + ``ChatCompletionAccumulator``.

Both with 16 KiB pieces (a busy stream: many events per socket read) and with one event per
piece (a slow stream: every event arrives in its own read, so per-feed overhead shows).

Run: ``.venv/bin/python bench/bench_sse_micro.py [--events 20000] [--repeat 7]``. Prints the best
of ``--repeat`` runs for each (best-of reduces noise from the shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from kimiflow.core.accumulate import ChatCompletionAccumulator
from kimiflow.core.sse import SSEDecoder
from kimiflow.types import ChatCompletionChunk, decode

PIECE = 16 * 1024
_TEXTS = ["你好", "，", "world", " 我是", "Kimi", "。", "🙂", " the quick", " brown fox", "1+1=2"]


def build_stream(events: int) -> bytes:
    """A realistic Kimi stream body with ``events`` data events (including ``[DONE]``)."""
    head = (
        '{"id":"chatcmpl-67500eb0c51af667d5968f74","object":"chat.completion.chunk",'
        '"created":1698999575,"model":"moonshot-v1-8k","choices":[{"index":0,'
    )
    lines = [f'data: {head}"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}\n\n']
    for i in range(events - 3):
        text = json.dumps(_TEXTS[i % len(_TEXTS)], ensure_ascii=False)
        lines.append(f'data: {head}"delta":{{"content":{text}}},"finish_reason":null}}]}}\n\n')
    lines.append(
        f'data: {head}"delta":{{}},"finish_reason":"stop","usage":{{"prompt_tokens":19,'
        f'"completion_tokens":{events - 3},"total_tokens":{events + 16}}}}}]}}\n\n'
    )
    lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def pieces_of(body: bytes) -> list[bytes]:
    return [body[i : i + PIECE] for i in range(0, len(body), PIECE)]


def event_pieces(body: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in body.split(b"\n\n")[:-1]]


def naive(pieces: list[bytes]) -> int:
    count = 0
    rest = b""
    for piece in pieces:
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.startswith(b"data: "):
                count += 1
    return count


def naive_json(pieces: list[bytes]) -> int:
    count = 0
    rest = b""
    for piece in pieces:
        lines = (rest + piece).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.startswith(b"data: "):
                payload = line[6:]
                if payload != b"[DONE]":
                    json.loads(payload)
                count += 1
    return count


def decoder_only(pieces: list[bytes]) -> int:
    decoder = SSEDecoder()
    count = 0
    for piece in pieces:
        count += len(decoder.feed(piece))
    decoder.close()
    return count


def kimiflow_full(pieces: list[bytes]) -> int:
    decoder = SSEDecoder()
    acc = ChatCompletionAccumulator()
    count = 0
    for piece in pieces:
        for event in decoder.feed(piece):
            count += 1
            if event.data == "[DONE]":
                break
            acc.add(decode(event.data, ChatCompletionChunk))
    decoder.close()
    final = acc.completion()
    assert final.usage is not None
    return count


def best_of(fn: Callable[[list[bytes]], int], pieces: list[bytes], expected: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        got = fn(pieces)
        elapsed = time.process_time() - start
        if got != expected:
            raise SystemExit(f"{fn.__name__}: counted {got} events, expected {expected}")
        best = min(best, elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    body = build_stream(args.events)
    rows = [
        ("naive split loop", naive),
        ("SSEDecoder", decoder_only),
        ("naive split + json.loads", naive_json),
        ("SSEDecoder + msgspec + accumulate", kimiflow_full),
    ]
    for label, pieces in (
        (f"{PIECE} byte pieces", pieces_of(body)),
        ("one event per piece", event_pieces(body)),
    ):
        print(f"{args.events} events, {len(body) / 1024:.0f} KiB, {len(pieces)} pieces ({label})")
        for name, fn in rows:
            per_event = best_of(fn, pieces, args.events, args.repeat) / args.events * 1e6
            print(f"  {name:36s} {per_event:6.3f} µs/event")

if __name__ == "__main__":
    main()
