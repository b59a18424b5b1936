"""The loop behind ``chat.completions.run_tools()``, sans I/O: bodies out, completions and tool results in.

Both clients drive it the same way (they differ only in how a step's calls run: a thread pool or
``asyncio.gather``)::

    loop = ToolLoop(model, messages, [get_weather, WEB_SEARCH_TOOL], max_steps=10)
    for body in loop.bodies():                 # at most max_steps bodies
        calls = loop.feed(send(body))          # [] once the model answers without tools
        if not calls:
            return loop.result()
        loop.deliver([run(call) for call in calls])   # results in call order, whatever finished first
    raise loop.failure()                       # not reached: feed() raises at the step limit

A tool's exception, an unknown tool name or malformed arguments become the tool message
(``error: ValueError: ...``) so the model can recover; only the step limit ends the loop with an
error, and that error carries the whole transcript, the usage and the cost.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from kimiflow.core.errors import InvalidArgumentError, KimiflowError
from kimiflow.core.loops import DEFAULT_MAX_STEPS as DEFAULT_MAX_STEPS
from kimiflow.core.pricing import usage_cost_cny
from kimiflow.core.schema import to_mfjs
from kimiflow.parse_loop import sum_usage
from kimiflow.types.chat import ChatCompletion, ChatCompletionChunk, ToolCall, Usage

TOOL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9\-_]{2,63}$")
WEB_SEARCH_NAME = "$web_search"
_RESERVED = ("stream", "tools", "model", "messages", "n")
# A tool's result text is bounded: a runaway tool must not blow the context window (or memory).
MAX_RESULT_CHARS = 100_000
_encode_json = msgspec.json.Encoder().encode
# Kimi bills each $web_search call that ends a step with finish_reason "tool_calls": ¥0.03 on the China
# price list (docs/kimi-api.md §2.4, §8; $0.005 on the global one). The search results' tokens are billed
# as the next step's prompt.
WEB_SEARCH_FEE_CNY = 0.03


class ToolLoopError(KimiflowError):
    """``run_tools()`` ended without a final answer; ``messages`` is the transcript so far.

    ``completions``, ``usage`` (summed over every step) and ``cost_cny`` say what it cost.
    """

    def __init__(self, message: str, messages: list[dict[str, Any]], completions: list[ChatCompletion],
                 usage: Usage, cost_cny: float) -> None:
        super().__init__(message)
        self.messages = messages
        self.completions = completions
        self.usage = usage
        self.cost_cny = cost_cny

    @property
    def steps(self) -> int:
        return len(self.completions)


class MaxStepsExceededError(ToolLoopError):
    """Every one of ``max_steps`` completions asked for tools: raise ``max_steps`` or change the tools.

    >>> try: client.chat.completions.run_tools(model=m, messages=msgs, tools=[f], max_steps=3)
    ... except MaxStepsExceededError as exc: print(exc.steps, exc.messages[-1])
    """


@dataclass(frozen=True)
class Tool:
    """One entry of ``tools``: the spec sent to Kimi and, for a Python function, how to call it."""

    name: str
    spec: dict[str, Any]
    function: Callable[..., Any] | None = None
    arguments_type: Any = None

    @property
    def builtin(self) -> bool:
        return self.spec.get("type") == "builtin_function"


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise InvalidArgumentError(
            f"{where}: tool name {name!r} is not valid for Kimi; it must match ^[a-zA-Z_][a-zA-Z0-9-_]{{2,63}}$ "
            "(3 to 64 letters, digits, '-' or '_'), e.g. rename the function to get_weather"
        )
    return name


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before an ``Args:`` section) and each ``name: text`` line under ``Args:``."""
    lines = doc.splitlines()
    described: dict[str, str] = {}
    summary: list[str] = []
    in_args = False
    for line in lines:
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            match = re.match(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$", stripped)
            if match:
                described[match.group(1)] = match.group(2)
            elif stripped and not line.startswith((" ", "\t")):
                in_args = False
            continue
        summary.append(line)
    return "\n".join(summary).strip(), described


def function_tool(function: Callable[..., Any]) -> Tool:
    """The tool for a plain Python function (sync or async): its name, docstring and typed parameters.

    >>> def get_weather(city: str, days: int = 1) -> str:
    ...     '''Forecast for a city.'''
    >>> function_tool(get_weather).spec["function"]["parameters"]["required"]
    ['city']
    """
    name = _check_name(getattr(function, "__name__", None), f"tool {function!r}")
    try:
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise InvalidArgumentError(f"cannot read the signature of tool {name!r} ({exc}); "
                                   "give it plain, importable type hints") from None
    fields: list[tuple[Any, ...]] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise InvalidArgumentError(f"tool {name!r}: parameter {param.name!r} must be an ordinary named "
                                       "parameter (Kimi passes arguments by name); drop *args, **kwargs and '/'")
        if param.name not in hints:
            raise InvalidArgumentError(f"tool {name!r}: parameter {param.name!r} has no type hint; "
                                       f"annotate it, e.g. {param.name}: str")
        if param.default is param.empty:
            fields.append((param.name, hints[param.name]))
        else:
            fields.append((param.name, hints[param.name], param.default))
    arguments_type = msgspec.defstruct(f"{name}_arguments", fields, kw_only=True, forbid_unknown_fields=True)
    parameters = to_mfjs(arguments_type)
    parameters.pop("title", None)
    description, described = _docstring_parts(inspect.getdoc(function) or "")
    for pname, text in described.items():
        prop = parameters.get("properties", {}).get(pname)
        if isinstance(prop, dict) and "description" not in prop:
            prop["description"] = text
    spec: dict[str, Any] = {"type": "function", "function": {"name": name, "parameters": parameters}}
    if description:
        spec["function"]["description"] = description
    return Tool(name, spec, function, arguments_type)


def make_tool(tool: Any, where: str = "tools") -> Tool:
    """A ``Tool`` from a function, a ``Tool``, or a dict tool spec (passed through as it is)."""
    if isinstance(tool, Tool):
        return tool
    if isinstance(tool, Mapping):
        function = tool.get("function")
        if tool.get("type") not in ("function", "builtin_function") or not isinstance(function, Mapping):
            raise InvalidArgumentError(f"{where} must be {{'type': 'function', 'function': {{'name': ...}}}} "
                                       "or kimiflow.WEB_SEARCH_TOOL; got a dict without them")
        name = function.get("name")
        if tool.get("type") == "builtin_function":
            if name != WEB_SEARCH_NAME:
                raise InvalidArgumentError(f"{where}: the only builtin_function is {WEB_SEARCH_NAME!r}, got {name!r}")
        else:
            _check_name(name, where)
        return Tool(str(name), dict(tool))
    if callable(tool):
        return function_tool(tool)
    raise InvalidArgumentError(f"{where} must be a function, a dict tool spec or kimiflow.WEB_SEARCH_TOOL; "
                               f"got {type(tool).__name__}")


def result_text(value: Any) -> str:
    """A tool's return value as a tool message: a string as is, anything else as JSON (or ``str()``)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = _encode_json(value).decode()
        except (TypeError, ValueError):
            text = str(value)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"... [cut at {MAX_RESULT_CHARS} characters]"
    return text


def error_text(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {exc}"


@dataclass
class PendingCall:
    """One tool call of a step. ``content`` is already set when no Python function has to run
    (``$web_search``, an unknown tool, malformed arguments); otherwise ``call_sync``/``call_async``."""

    index: int
    id: str
    name: str
    arguments: str
    tool: Tool | None
    kwargs: dict[str, Any] | None = None
    content: str | None = None

    def call_sync(self) -> str:
        """The tool message text, the function run in this thread (a coroutine function in its own loop)."""
        if self.content is not None:
            return self.content
        assert self.tool is not None and self.tool.function is not None and self.kwargs is not None
        try:
            value = self.tool.function(**self.kwargs)
            if inspect.isawaitable(value):
                value = asyncio.run(_awaited(value))
            return result_text(value)
        except Exception as exc:  # a tool's failure is the model's to handle, not a crash
            return error_text(exc)

    async def call_async(self) -> str:
        """The tool message text; a sync function runs in a worker thread so calls overlap."""
        if self.content is not None:
            return self.content
        assert self.tool is not None and self.tool.function is not None and self.kwargs is not None
        function, kwargs = self.tool.function, self.kwargs
        try:
            if inspect.iscoroutinefunction(function):
                value = await function(**kwargs)
            else:
                value = await asyncio.to_thread(function, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            return result_text(value)
        except Exception as exc:  # a tool's failure is the model's to handle, not a crash
            return error_text(exc)


async def _awaited(value: Any) -> Any:
    return await value


EventKind = Literal["text_delta", "reasoning_delta", "tool_call_started", "tool_call_finished", "step_done"]


@dataclass(frozen=True)
class ToolEvent:
    """What ``on_event`` receives: a piece of the answer or of the reasoning (``stream=True`` only;
    ``content`` is the piece), a call started or finished (``content`` is its result), or a step done."""

    kind: EventKind
    step: int
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    content: str | None = None


@dataclass
class ToolRunResult:
    """``run_tools()``'s answer: the transcript, the final completion and the totals over every step."""

    messages: list[dict[str, Any]]
    final: ChatCompletion
    completions: list[ChatCompletion] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_cny: float = 0.0

    @property
    def steps(self) -> int:
        """How many completions the loop asked for."""
        return len(self.completions)

    @property
    def content(self) -> str | None:
        """The final answer's text."""
        return self.final.choices[0].message.content if self.final.choices else None


def _assistant_message(call_message: Any, tool_calls: list[ToolCall]) -> dict[str, Any]:
    # Thinking models require their reasoning_content back, and Kimi matches results by id: both
    # are copied exactly as received.
    message: dict[str, Any] = {"role": "assistant", "content": call_message.content or ""}
    if call_message.reasoning_content is not None:
        message["reasoning_content"] = call_message.reasoning_content
    calls = []
    for call in tool_calls:
        entry: dict[str, Any] = {"id": call.id, "type": call.type,
                                 "function": {"name": call.function.name, "arguments": call.function.arguments}}
        if call.index is not None:
            entry["index"] = call.index
        calls.append(entry)
    message["tool_calls"] = calls
    return message


class ToolLoop:
    """One ``run_tools()`` call's state: the transcript, the tools, the steps and their usage."""

    def __init__(self, model: str, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], *,
                 params: Mapping[str, Any] | None = None, max_steps: int = DEFAULT_MAX_STEPS,
                 on_event: Callable[[ToolEvent], None] | None = None) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise InvalidArgumentError(f"max_steps must be an integer >= 1, got {max_steps!r}; e.g. max_steps=10")
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence) or not tools:
            raise InvalidArgumentError("tools must be a non-empty list of functions or tool specs, "
                                       "e.g. tools=[get_weather]")
        extra = dict(params or {})
        for name in _RESERVED:
            if name in extra:
                raise InvalidArgumentError(f"run_tools() does not take {name!r} among its extra parameters; "
                                           "it sends one choice, without streaming, with its own tools")
        self.tools: dict[str, Tool] = {}
        for i, raw in enumerate(tools):
            tool = make_tool(raw, f"tools[{i}]")
            if tool.name in self.tools:
                raise InvalidArgumentError(f"tools[{i}]: the tool name {tool.name!r} is used twice; "
                                           "Kimi rejects duplicated function names")
            self.tools[tool.name] = tool
        self.model = model
        self.max_steps = max_steps
        self.messages: list[dict[str, Any]] = [dict(m) for m in messages]
        self.completions: list[ChatCompletion] = []
        self._params = extra
        self._on_event = on_event
        self._pending: list[PendingCall] = []

    @property
    def usage(self) -> Usage:
        return sum_usage([c.usage for c in self.completions])

    @property
    def cost_cny(self) -> float:
        """Tokens at the model's price plus the per-call fee of every ``$web_search`` call."""
        tokens = sum(usage_cost_cny(c.model or self.model, c.usage) for c in self.completions)
        return tokens + self.web_search_calls * WEB_SEARCH_FEE_CNY

    @property
    def web_search_calls(self) -> int:
        count = 0
        for completion in self.completions:
            for choice in completion.choices[:1]:
                if choice.finish_reason == "tool_calls":
                    count += sum(1 for c in choice.message.tool_calls or [] if c.function.name == WEB_SEARCH_NAME)
        return count

    def _emit(self, event: ToolEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def bodies(self) -> Iterator[dict[str, Any]]:
        """The request body of each step; at most ``max_steps``."""
        specs = [tool.spec for tool in self.tools.values()]
        for _ in range(self.max_steps):
            if self._pending:
                raise RuntimeError("deliver() the results of the last step's tool calls before the next body")
            yield {"model": self.model, "messages": list(self.messages), "tools": specs, **self._params}

    def feed_chunk(self, chunk: ChatCompletionChunk) -> None:
        """Report a streamed chunk's text (choice 0) as ``text_delta``/``reasoning_delta`` events."""
        if self._on_event is None:
            return
        step = len(self.completions) + 1
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            if choice.delta.reasoning_content:
                self._emit(ToolEvent("reasoning_delta", step, content=choice.delta.reasoning_content))
            if choice.delta.content:
                self._emit(ToolEvent("text_delta", step, content=choice.delta.content))

    def feed(self, completion: ChatCompletion) -> list[PendingCall]:
        """The tool calls to run for this completion, or ``[]`` when it is the final answer.

        Raises ``MaxStepsExceededError`` when the ``max_steps``-th completion still asks for tools.
        """
        self.completions.append(completion)
        step = len(self.completions)
        choice = completion.choices[0] if completion.choices else None
        tool_calls = list(choice.message.tool_calls or []) if choice is not None else []
        if choice is None or not tool_calls:
            if choice is not None:
                message: dict[str, Any] = {"role": "assistant", "content": choice.message.content or ""}
                if choice.message.reasoning_content is not None:
                    message["reasoning_content"] = choice.message.reasoning_content
                self.messages.append(message)
            self._emit(ToolEvent("step_done", step))
            return []
        self.messages.append(_assistant_message(choice.message, tool_calls))
        if step >= self.max_steps:
            self._emit(ToolEvent("step_done", step))
            raise MaxStepsExceededError(
                f"the model still asked for tools after max_steps={self.max_steps} steps; raise max_steps or "
                "check the tools' results (exc.messages holds the transcript)",
                list(self.messages), list(self.completions), self.usage, self.cost_cny)
        self._pending = [self._prepare(i, call) for i, call in enumerate(tool_calls)]
        for call in self._pending:
            self._emit(ToolEvent("tool_call_started", step, call.id, call.name, call.arguments))
        return list(self._pending)

    def _prepare(self, index: int, call: ToolCall) -> PendingCall:
        name, arguments = call.function.name, call.function.arguments
        tool = self.tools.get(name)
        pending = PendingCall(index, call.id, name, arguments, tool)
        if tool is None:
            pending.content = f"error: unknown tool {name!r}; the tools are: {', '.join(self.tools)}"
        elif tool.builtin:
            # Kimi runs $web_search itself: the tool message must carry the arguments unchanged (§2.4).
            pending.content = arguments
        elif tool.function is None:
            pending.content = f"error: tool {name!r} was declared as a spec only and has no Python function"
        else:
            try:
                decoded = msgspec.json.decode(arguments or "{}", type=tool.arguments_type)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                pending.content = f"error: malformed arguments for {name!r}: {exc}"
            else:
                pending.kwargs = {f: getattr(decoded, f) for f in decoded.__struct_fields__}
        return pending

    def deliver(self, contents: Sequence[str]) -> None:
        """The tool message text of each call ``feed`` returned, in the same order."""
        if len(contents) != len(self._pending):
            raise RuntimeError(f"deliver() needs {len(self._pending)} results, got {len(contents)}")
        step = len(self.completions)
        for call, content in zip(self._pending, contents, strict=True):
            self.messages.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content})
            self._emit(ToolEvent("tool_call_finished", step, call.id, call.name, call.arguments, content))
        self._pending = []
        self._emit(ToolEvent("step_done", step))

    def result(self) -> ToolRunResult:
        return ToolRunResult(list(self.messages), self.completions[-1], list(self.completions), self.usage,
                             self.cost_cny)

    def failure(self) -> ToolLoopError:
        return MaxStepsExceededError(f"run_tools() stopped after max_steps={self.max_steps} steps",
                                     list(self.messages), list(self.completions), self.usage, self.cost_cny)
