"""Deterministic mixed Chinese/English answer text, one token per piece.

A corpus of sentences is built once per seed; a request picks an offset from a hash of its body,
so the same request and seed always give the same answer, and a 20,000-token answer is a list
slice, not 20,000 random draws. Each piece is one token as Kimi would count it: one CJK character,
or an English word or word fragment (about a third of the words are split in two, which gives the
~0.75 words per token that ``core.tokens.estimate_text_tokens`` assumes).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import msgspec

CORPUS_TOKENS = 8192

_CN_PHRASES = (
    "人工智能", "模型", "数据", "我们", "可以", "帮助", "分析", "问题", "今天", "天气", "很好", "学习",
    "语言", "月之暗面", "工作", "流程", "系统", "用户", "需要", "结果", "重要", "时间", "方法", "服务",
    "客户", "工单", "分类", "总结", "回答", "上下文", "推理", "速度", "成本", "质量", "团队", "计划",
)
_EN_WORDS = (
    "the", "model", "reads", "your", "request", "and", "writes", "a", "clear", "answer", "with", "care",
    "data", "flows", "through", "each", "step", "of", "process", "team", "can", "trust", "result", "fast",
    "streaming", "integration", "throughput", "completion", "tokenizer", "reasoning", "assistant",
    "customer", "classification", "summary", "pipeline", "latency", "context", "deterministic",
)


def _split_word(word: str) -> list[str]:
    # Long words become two tokens, as a BPE tokenizer would split them.
    if len(word) >= 7:
        cut = len(word) // 2 + 1
        return [word[:cut], word[cut:]]
    return [word]


def _chinese_sentence(rng: random.Random) -> list[str]:
    pieces: list[str] = []
    target = rng.randint(6, 16)
    while len(pieces) < target:
        pieces.extend(rng.choice(_CN_PHRASES))
        if len(pieces) < target and rng.random() < 0.15:
            pieces.append("，")
    pieces.append(rng.choice("。！？"))
    return pieces


def _english_sentence(rng: random.Random) -> list[str]:
    words = [rng.choice(_EN_WORDS) for _ in range(rng.randint(4, 10))]
    words[0] = words[0].capitalize()
    pieces: list[str] = []
    for word in words:
        parts = _split_word(word)
        parts[0] = " " + parts[0]
        pieces.extend(parts)
    pieces[-1] += "."
    return pieces


@dataclass(frozen=True)
class Corpus:
    """A seeded cycle of token pieces and their JSON-encoded forms (for cheap SSE chunks)."""

    pieces: tuple[str, ...]
    encoded: tuple[bytes, ...]
    sentence_starts: tuple[int, ...]

    @classmethod
    def build(cls, seed: int, size: int = CORPUS_TOKENS) -> Corpus:
        """The corpus of ``seed``: alternating Chinese and English sentences, ``size`` pieces."""
        rng = random.Random(f"kimiflow-sim-corpus-{seed}")
        pieces: list[str] = []
        starts: list[int] = []
        while len(pieces) < size:
            sentence = _chinese_sentence(rng) if rng.random() < 0.55 else _english_sentence(rng)
            starts.append(len(pieces))
            pieces.extend(sentence)
        pieces = pieces[:size]
        if pieces[0].startswith(" "):
            pieces[0] = pieces[0][1:]
        encoder = msgspec.json.Encoder()
        return cls(tuple(pieces), tuple(encoder.encode(p) for p in pieces), tuple(starts))

    def sentence_start(self, number: int) -> int:
        """The offset of a sentence picked by ``number``, so answers never begin mid-word."""
        return self.sentence_starts[number % len(self.sentence_starts)]

    def take(self, offset: int, count: int) -> tuple[list[str], list[bytes]]:
        """``count`` consecutive pieces from ``offset``, wrapping around the corpus."""
        size = len(self.pieces)
        start = offset % size
        pieces: list[str] = []
        encoded: list[bytes] = []
        while count > 0:
            end = min(size, start + count)
            pieces.extend(self.pieces[start:end])
            encoded.extend(self.encoded[start:end])
            count -= end - start
            start = 0
        return pieces, encoded


def request_digest(body: bytes, seed: int, salt: str = "") -> int:
    """A stable 64-bit number for (request body, seed, salt): the root of all per-request choices."""
    h = hashlib.blake2b(body, digest_size=8, person=b"kimiflow-sim")
    h.update(f"|{seed}|{salt}".encode())
    return int.from_bytes(h.digest(), "big")


def default_answer_tokens(digest: int) -> int:
    """The answer length when nothing forces one: 20..120 tokens, fixed per request and seed."""
    return 20 + (digest >> 16) % 101


def cut_at_stop(pieces: list[str], encoded: list[bytes], stops: list[str]) -> tuple[bool, list[str], list[bytes]]:
    """Truncate before the first stop string (which is not emitted); ``(stopped, pieces, encoded)``."""
    if not stops:
        return False, pieces, encoded
    text = "".join(pieces)
    positions = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if not positions:
        return False, pieces, encoded
    limit = min(positions)
    kept: list[str] = []
    kept_encoded: list[bytes] = []
    used = 0
    for piece, enc in zip(pieces, encoded, strict=True):
        if used + len(piece) <= limit:
            kept.append(piece)
            kept_encoded.append(enc)
            used += len(piece)
            continue
        rest = piece[: limit - used]
        if rest:
            kept.append(rest)
            kept_encoded.append(msgspec.json.encode(rest))
        break
    return True, kept, kept_encoded
