"""A chat conversation as the CLI runs it: history, one request per turn, logging, running totals.

``kimiflow chat "PROMPT"`` and the interactive chat share this class, so both build messages,
stream, account for usage and log in the same way. Thinking models' ``reasoning_content`` is kept
on the assistant messages of the history and sent back, as Kimi requires.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kimiflow.cli.logstore import Exchange, LogStore
from kimiflow.core.loops import DEFAULT_MAX_STEPS
from kimiflow.core.pricing import usage_cost_cny

if TYPE_CHECKING:
    from kimiflow import ChatCompletionStream, Kimi
    from kimiflow.types import ChatCompletion, MessageParam, Usage

TextSink = Callable[[str], None]


@dataclass
class Reply:
    """One answer: its text, reasoning, usage, cost, timing and whether Ctrl-C cut it short.

    ``usage`` and ``cost_cny`` are ``None`` when unknown: an answer interrupted before Kimi sent
    its usage has no token count, and 0 would be a lie (the prompt was probably billed).

    >>> reply = convo.send("你好")
    >>> reply.cancelled, reply.usage is None
    (False, False)
    """

    content: str
    reasoning: str | None
    completion: ChatCompletion | None
    usage: Usage | None
    cost_cny: float | None
    latency_ms: float
    request_id: str | None
    interrupted: bool = False
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cancelled(self) -> bool:
        """Interrupted before anything arrived: nothing was answered, so nothing is kept or logged."""
        return self.interrupted and not self.content and not self.reasoning


@dataclass
class Totals:
    """Running usage of a conversation, for ``/usage``."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_cny: float = 0.0
    unknown_usage: int = 0
    """Requests whose usage never arrived (interrupted): not counted in the sums above."""

    def add(self, reply: Reply) -> None:
        self.requests += 1
        if reply.usage is None:
            self.unknown_usage += 1
            return
        self.prompt_tokens += reply.usage.prompt_tokens
        self.completion_tokens += reply.usage.completion_tokens
        self.cost_cny += reply.cost_cny or 0.0

    def describe(self) -> str:
        """``2 requests: 40 prompt + 25 completion tokens, cost ¥0.000780`` (plus the unknown ones)."""
        from kimiflow.cli.output import format_cost

        line = (f"{self.requests} requests: {self.prompt_tokens} prompt + {self.completion_tokens} completion "
                f"tokens, cost {format_cost(self.cost_cny)}")
        if self.unknown_usage:
            line += f" (usage unknown for {self.unknown_usage} interrupted, not included)"
        return line


@dataclass
class Conversation:
    """Messages plus the settings that apply to the next request.

    >>> convo = Conversation(client, model="moonshot-v1-8k", system="你是一位語言藝術大師")
    >>> reply = convo.send("你好", on_text=lambda t: print(t, end=""))
    >>> reply.content, reply.usage.total_tokens
    """

    client: Kimi
    model: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    store: LogStore | None = None
    conversation_id: str | None = None
    history: list[MessageParam] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    clock: Callable[[], float] = time.perf_counter
    tools: list[Any] = field(default_factory=list)
    """Python functions Kimi may call (``kimiflow chat --tool``); the answer then comes from ``run_tools``."""
    max_steps: int = DEFAULT_MAX_STEPS
    on_tool: Callable[[dict[str, Any]], None] | None = None
    """Told about each finished tool call: name, arguments, result, ok, duration_ms."""

    def messages_for(self, prompt: str) -> list[MessageParam]:
        """The messages of the next request: system, history, then ``prompt``."""
        messages: list[MessageParam] = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        messages.extend(self.history)
        messages.append({"role": "user", "content": prompt})
        return messages

    def reset(self) -> None:
        """Forget the history (the system prompt stays); the next exchange starts a new logged conversation."""
        self.history.clear()
        self.conversation_id = None

    def send(
        self,
        prompt: str,
        *,
        stream: bool = True,
        on_text: TextSink | None = None,
        on_reasoning: TextSink | None = None,
    ) -> Reply:
        """Ask ``prompt`` in this conversation; text arrives through the sinks as it streams.

        Ctrl-C while streaming ends the answer early: the reply is returned with ``interrupted``
        set and what arrived so far, which also stays in the history (it is what the user saw).
        Ctrl-C before anything arrived cancels the turn: the reply is ``cancelled`` and neither the
        history nor the log keeps it. An answer with no content (cut off while still reasoning) is
        logged but kept out of the history, because Kimi rejects an assistant turn with empty
        content with a 400 on every later request.
        """
        messages = self.messages_for(prompt)
        started = self.clock()
        if self.tools:
            reply = self._run_tools(messages, started, on_text)
        elif stream:
            reply = self._stream(messages, started, on_text, on_reasoning)
        else:
            completion = self.client.chat.completions.create(model=self.model, messages=messages, **self.params)
            reply = self._reply(completion, started, completion.request_id)
            if on_reasoning and reply.reasoning:
                on_reasoning(reply.reasoning)
            if on_text and reply.content:
                on_text(reply.content)
        self.totals.add(reply)
        if reply.cancelled:
            return reply
        self.history += _turn(prompt, reply.content, reply.reasoning)
        self._log(prompt, reply)
        return reply

    def _run_tools(self, messages: list[MessageParam], started: float, on_text: TextSink | None) -> Reply:
        """The answer through ``run_tools``: each call timed and reported to ``on_tool`` as it ends.

        Raises ``MaxStepsExceededError`` (nothing logged) when the model still wants tools after ``max_steps``.
        """
        from kimiflow.tool_loop import ToolEvent

        calls: list[dict[str, Any]] = []
        began: dict[str, float] = {}

        def on_event(event: ToolEvent) -> None:
            key = f"{event.step}:{event.call_id}"
            if event.kind == "tool_call_started":
                began[key] = self.clock()
            elif event.kind == "tool_call_finished":
                result = event.content or ""
                call = {"name": event.name, "arguments": event.arguments, "result": result,
                        "ok": not result.startswith("error: "), "step": event.step,
                        "duration_ms": round((self.clock() - began.pop(key, self.clock())) * 1000, 1)}
                calls.append(call)
                if self.on_tool is not None:
                    self.on_tool(call)

        run = self.client.chat.completions.run_tools(model=self.model, messages=messages, tools=self.tools,
                                                     max_steps=self.max_steps, on_event=on_event, **self.params)
        reply = self._reply(run.final, started, run.final.request_id)
        reply.usage, reply.cost_cny, reply.tool_calls = run.usage, run.cost_cny, calls
        if on_text and reply.content:
            on_text(reply.content)
        return reply

    def _stream(
        self, messages: list[MessageParam], started: float, on_text: TextSink | None,
        on_reasoning: TextSink | None,
    ) -> Reply:
        stream: ChatCompletionStream | None = None
        try:
            # Opening sends the request (and waits out any retry backoff): Ctrl-C may land there too.
            with self.client.chat.completions.stream(model=self.model, messages=messages, **self.params) as stream:
                for chunk in stream:
                    for choice in chunk.choices:
                        if choice.index != 0:
                            continue
                        delta = choice.delta
                        if delta.reasoning_content and on_reasoning:
                            on_reasoning(delta.reasoning_content)
                        if delta.content and on_text:
                            on_text(delta.content)
                return self._reply(stream.get_final_completion(), started, stream.request_id)
        except KeyboardInterrupt:
            if stream is None:  # nothing arrived: a cancelled turn
                from kimiflow.types import ChatCompletion

                return self._reply(ChatCompletion(model=self.model), started, None, interrupted=True)
            return self._reply(stream.current_completion, started, stream.request_id, interrupted=True)

    def _reply(
        self, completion: ChatCompletion, started: float, request_id: str | None, *, interrupted: bool = False
    ) -> Reply:
        message = completion.choices[0].message if completion.choices else None
        usage = completion.usage
        return Reply(
            content=(message.content or "") if message else "",
            reasoning=message.reasoning_content if message else None,
            completion=completion,
            usage=usage,
            cost_cny=None if usage is None else usage_cost_cny(completion.model or self.model, usage),
            latency_ms=(self.clock() - started) * 1000,
            request_id=request_id,
            interrupted=interrupted,
        )

    def _log(self, prompt: str, reply: Reply) -> None:
        if self.store is None:
            return
        if self.conversation_id is None:
            self.conversation_id = self.store.new_conversation(self.model)
        usage = reply.usage
        self.store.record(
            Exchange(
                conversation_id=self.conversation_id,
                model=self.model,
                system=self.system,
                prompt=prompt,
                answer=reply.content,
                reasoning=reply.reasoning,
                options=dict(self.params),
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                total_tokens=usage.total_tokens if usage else None,
                cost_cny=reply.cost_cny,
                latency_ms=reply.latency_ms,
                request_id=reply.request_id,
                interrupted=reply.interrupted,
                tool_calls=reply.tool_calls,
            )
        )

    def load(self, exchanges: list[Exchange]) -> None:
        """Continue a logged conversation: its history, and its model/system unless already chosen."""
        if not exchanges:
            return
        last = exchanges[-1]
        self.conversation_id = last.conversation_id
        if self.system is None:
            self.system = last.system
        for exchange in exchanges:
            # Older logs hold empty answers (Ctrl-C before the first token); _turn leaves them out.
            self.history += _turn(exchange.prompt, exchange.answer, exchange.reasoning)

    def transcript(self) -> str:
        """The conversation as Markdown, for ``/save``."""
        lines = [f"# kimiflow chat ({self.model})", ""]
        if self.system:
            lines += ["**system:** " + self.system, ""]
        for message in self.history:
            if message.get("reasoning_content"):
                lines += [f"> _thinking:_ {message['reasoning_content']}", ""]
            lines += [f"**{message['role']}:** {message.get('content') or ''}", ""]
        return "\n".join(lines)


def _turn(prompt: str, answer: str, reasoning: str | None) -> list[MessageParam]:
    """The history messages of one exchange; none when there is no answer to send back.

    Kimi answers 400 ("must not have empty content") to an assistant message without content,
    and would do so on every later request of the conversation, so such a turn is dropped whole.
    """
    if not answer:
        return []
    assistant: MessageParam = {"role": "assistant", "content": answer}
    if reasoning:
        assistant["reasoning_content"] = reasoning
    return [{"role": "user", "content": prompt}, assistant]
