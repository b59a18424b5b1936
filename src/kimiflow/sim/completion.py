"""What the simulated model answers: reasoning, content or tool calls, finish reason and usage.

Pure planning, no I/O. The deterministic tool rule (documented for test writers):

- no ``tools``, ``tool_choice: "none"``, or the last message is a ``tool`` result → plain answer;
- ``tool_choice: {"type":"function","function":{"name":X}}`` → call X;
- ``tool_choice: "required"`` → call the best-matching tool (``tool_match.best_tool``);
- otherwise (auto) call every tool that matches the last user message (``tool_match.matching_tools``:
  name, description and parameter words; a message naming the function always matches), in
  declaration order; ``$web_search`` is called when the message contains "web_search" or "搜索".
  Arguments are valid for the tool's schema, strings filled from the prompt's words.

Answer length: ``X-Kimiflow-Sim-Tokens: N`` forces N completion tokens; otherwise 20..120 tokens
fixed per (request body, seed). ``max_tokens`` caps either, with ``finish_reason: "length"``.
Thinking models spend part of the budget on ``reasoning_content`` first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from kimiflow.sim import errors
from kimiflow.sim.structured import (
    ANSWER_FAULTS,
    EMPTY_AFTER_REASONING_TOKENS,
    faulty_content,
    json_answer,
    json_pieces,
)
from kimiflow.sim.textgen import Corpus, cut_at_stop, default_answer_tokens, request_digest
from kimiflow.sim.tool_match import best_tool, matching_tools, tool_arguments
from kimiflow.sim.validation import ChatRequest, ToolSpec

_ARG_FRAGMENT_CHARS = 8
_encode = msgspec.json.Encoder().encode


@dataclass
class ToolCallPlan:
    """One tool call: its Kimi-style id (``name:index``), kind, name and argument fragments."""

    index: int
    id: str
    type: str
    name: str
    arguments: str
    fragments: list[str]

    def as_message_dict(self) -> dict[str, Any]:
        """The non-streaming form, with Kimi's ``index`` field."""
        return {
            "index": self.index,
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class ChoicePlan:
    """Everything one choice will emit."""

    index: int
    reasoning: list[str] = field(default_factory=list)
    reasoning_encoded: list[bytes] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    content_encoded: list[bytes] = field(default_factory=list)
    tool_calls: list[ToolCallPlan] = field(default_factory=list)
    finish_reason: str = "stop"

    @property
    def completion_tokens(self) -> int:
        """Tokens generated: one per reasoning/content piece, one per tool-call chunk."""
        if not self.tool_calls:
            return len(self.reasoning) + len(self.content)
        tool_tokens = sum(1 + len(call.fragments) for call in self.tool_calls)
        return len(self.reasoning) + len(self.content) + tool_tokens


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return str(content or "")
    return ""


def _chosen_tools(req: ChatRequest) -> list[ToolSpec]:
    if not req.tools or req.tool_choice == "none" or req.messages[-1].get("role") == "tool":
        return []
    if isinstance(req.tool_choice, dict):
        function = req.tool_choice.get("function")
        wanted = function.get("name") if isinstance(function, dict) else None
        for tool in req.tools:
            if tool.name == wanted:
                return [tool]
        raise errors.invalid_request(f"tool_choice names function {wanted!r}, which is not in tools")
    text = _last_user_text(req.messages)
    if req.tool_choice == "required":
        return [best_tool(req.tools, text)]
    return matching_tools(req.tools, text)


def _tool_call(tool: ToolSpec, index: int, digest: int, text: str) -> ToolCallPlan:
    if tool.builtin:
        # Kimi executes $web_search itself on the next request; the arguments carry a search
        # handle and the tokens the results will add (docs/kimi-api.md §2.4).
        arguments = msgspec.json.encode(
            {"search_result": {"search_id": f"{digest:016x}"}, "usage": {"total_tokens": 200 + digest % 800}}
        ).decode()
        kind = "builtin_function"
    else:
        arguments = msgspec.json.encode(tool_arguments(tool, text, digest)).decode()
        kind = "function"
    fragments = [arguments[i : i + _ARG_FRAGMENT_CHARS] for i in range(0, len(arguments), _ARG_FRAGMENT_CHARS)]
    return ToolCallPlan(index, f"{tool.name}:{index}", kind, tool.name, arguments, fragments)


def plan_choices(req: ChatRequest, seed: int, corpus: Corpus, forced_tokens: int | None) -> list[ChoicePlan]:
    """The ``n`` choices for a validated request: same conversation + seed → same answer.

    The text depends on the model, messages and tools only, so ``max_tokens`` or ``stop`` cut the
    very answer the same request would get without them, as a real model's would.
    """
    tools = _chosen_tools(req)
    body = _encode([req.model.id, req.messages, [t.name for t in req.tools]])
    plans = []
    for index in range(req.n):
        digest = request_digest(body, seed, f"choice-{index}")
        budget = forced_tokens if forced_tokens is not None else default_answer_tokens(digest)
        cap = req.max_tokens
        plan = ChoicePlan(index)
        reasoning_len = 0
        if req.model.reasoning:
            reasoning_len = min(8 + digest % 25, budget // 2)
        if tools and (cap is None or reasoning_len + 8 * len(tools) <= cap):
            if reasoning_len:
                plan.reasoning, plan.reasoning_encoded = corpus.take(corpus.sentence_start(digest >> 20), reasoning_len)
            text = _last_user_text(req.messages)
            plan.tool_calls = [_tool_call(tool, i, digest >> i, text) for i, tool in enumerate(tools)]
            plan.finish_reason = "tool_calls"
            plans.append(plan)
            continue
        total = budget
        if cap is not None and total > cap:
            total = cap
            plan.finish_reason = "length"
        reasoning_len = min(reasoning_len, total)
        if reasoning_len:
            plan.reasoning, plan.reasoning_encoded = corpus.take(corpus.sentence_start(digest >> 20), reasoning_len)
        if req.response_format is not None:
            # A JSON answer has its own length; max_tokens still truncates it mid-document.
            pieces, encoded = json_pieces(json_answer(req.response_format, req.messages, digest))
            if cap is not None and reasoning_len + len(pieces) > cap:
                pieces, encoded = pieces[: max(0, cap - reasoning_len)], encoded[: max(0, cap - reasoning_len)]
                plan.finish_reason = "length"
            else:
                plan.finish_reason = "stop"
        else:
            pieces, encoded = corpus.take(corpus.sentence_start(digest), total - reasoning_len)
        stopped, plan.content, plan.content_encoded = cut_at_stop(pieces, encoded, req.stop)
        if stopped:
            plan.finish_reason = "stop"
        plans.append(plan)
    return plans


def apply_answer_fault(plans: list[ChoicePlan], fault: str | None, max_tokens: int | None, corpus: Corpus) -> None:
    """Spoil every answering (non-tool-call) choice as the answer fault ``fault`` asks (see ``ANSWER_FAULTS``)."""
    if fault not in ANSWER_FAULTS:
        return
    for plan in plans:
        if plan.tool_calls:
            continue
        if fault == "empty-after-reasoning":
            budget = max_tokens or EMPTY_AFTER_REASONING_TOKENS
            plan.reasoning, plan.reasoning_encoded = corpus.take(corpus.sentence_start(plan.index), budget)
            plan.content, plan.content_encoded = [], []
            plan.finish_reason = "length"
            continue
        plan.content, plan.content_encoded = json_pieces(faulty_content(fault, "".join(plan.content)))
        if fault == "truncated-json":
            plan.finish_reason = "length"


def usage_dict(
    prompt_tokens: int, plans: list[ChoicePlan], reasoning_model: bool, cached_tokens: int | None = None
) -> dict[str, Any]:
    """The ``usage`` object for these choices (summed over choices for the top-level usage).

    ``cached_tokens`` (None: the model has no automatic cache) appears both at the top, as Moonshot
    sends it, and in ``prompt_tokens_details``; ``prompt_tokens`` includes it (kimi-api.md §3).
    """
    completion = sum(plan.completion_tokens for plan in plans)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    if cached_tokens is not None:
        usage["cached_tokens"] = cached_tokens
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_model:
        usage["completion_tokens_details"] = {"reasoning_tokens": sum(len(p.reasoning) for p in plans)}
    return usage
