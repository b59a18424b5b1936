"""``kimiflow chat``: one prompt (streamed), or an interactive conversation when there is none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from kimiflow.cli.inputs import UTF8_TEXT, parse_options, read_piped_stdin
from kimiflow.core.loops import DEFAULT_MAX_STEPS

if TYPE_CHECKING:
    from kimiflow.cli.conversation import Conversation


@click.command(name="chat")
@click.argument("prompt", required=False, type=UTF8_TEXT)
@click.option("-s", "--system", type=UTF8_TEXT, help="System prompt.")
@click.option("-m", "--model", type=UTF8_TEXT, help="Model id (default: the `model` setting, moonshot-v1-8k).")
@click.option("-t", "--temperature", type=float, help="Sampling temperature (Kimi: 0 to 1).")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest answer, in tokens.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Any other request parameter, e.g. -o top_p=0.9 -o response_format='{\"type\":\"json_object\"}'.")
@click.option("-f", "--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Ask about a document: uploaded for extraction (pdf, docx, txt...), its text sent as context.")
@click.option("-c", "--continue", "continue_last", is_flag=True, help="Continue the last logged conversation.")
@click.option("--cid", help="Continue the logged conversation with this id (see `kimiflow logs --json`).")
@click.option("--no-stream", is_flag=True, help="Wait for the whole answer instead of streaming it.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw completion JSON (implies --no-stream).")
@click.option("--usage", "show_usage", is_flag=True, help="Print tokens, cost and latency after the answer.")
@click.option("--no-log", is_flag=True, help="Do not log this exchange (or set KIMIFLOW_NO_LOG=1).")
@click.option("--schema", "schema_file", type=click.Path(exists=True, dir_okay=False),
              help="Answer as one JSON object validated against this JSON Schema file (re-asked if invalid).")
@click.option("--tool", "tool_specs", multiple=True, metavar="MODULE:FUNCTION",
              help="Let Kimi call this Python function (repeatable), e.g. --tool mytools:get_weather.")
@click.option("--max-steps", type=click.IntRange(min=1), default=DEFAULT_MAX_STEPS, show_default=True,
              help="With --tool: most completions in one answer before giving up.")
def chat(
    prompt: str | None, system: str | None, model: str | None, temperature: float | None,
    max_tokens: int | None, options: tuple[str, ...], files: tuple[str, ...], continue_last: bool,
    cid: str | None, no_stream: bool, as_json: bool, show_usage: bool, no_log: bool, schema_file: str | None,
    tool_specs: tuple[str, ...], max_steps: int,
) -> None:
    """Ask Kimi PROMPT and stream the answer; with no PROMPT on a terminal, chat interactively.

    Piped text is sent with the prompt: cat report.txt | kimiflow chat "总结一下"
    """
    flags = {"temperature": temperature, "max_tokens": max_tokens}
    params: dict[str, Any] = parse_options(options, set_by_flags=[k for k, v in flags.items() if v is not None])
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens

    piped = read_piped_stdin()
    if piped is not None and piped.strip():
        prompt = f"{piped.rstrip()}\n\n{prompt}" if prompt else piped.rstrip()

    if prompt is None and piped is not None:
        raise click.UsageError("no prompt: give one as an argument or pipe text in.")
    schema = _load_schema(schema_file) if schema_file else None
    if schema is not None and (prompt is None or continue_last or cid):
        raise click.UsageError("--schema answers one PROMPT: give a prompt, without -c/--cid or the interactive chat.")

    if schema is not None and tool_specs:
        raise click.UsageError("--schema and --tool do not combine yet: use one of them.")
    tools = [load_tool(spec) for spec in tool_specs]

    from kimiflow.cli.connect import open_client, open_log
    from kimiflow.cli.conversation import Conversation
    from kimiflow.cli.settings import resolve

    with open_client() as client:
        store = open_log(no_log)
        convo = Conversation(client, model=model or resolve("model") or "", system=system, params=params,
                             store=store, tools=tools, max_steps=max_steps, on_tool=show_tool_call)
        if continue_last or cid:
            _load_logged(convo, cid, keep_model=model is not None)
        if files:
            from kimiflow.cli.files import extract_text

            # Kimi's file-extract flow: the document's text goes in as a system message (docs/kimi-api.md §7.4).
            extracted = [extract_text(client, path) for path in files]
            convo.system = "\n\n".join(part for part in (convo.system, *extracted) if part)
        if schema is not None and prompt is not None:
            _answer_as_json(convo, prompt, schema, as_json=as_json, show_usage=show_usage)
        elif prompt is None:
            from kimiflow.cli.repl import run_repl

            run_repl(convo)
        else:
            _ask_once(convo, prompt, stream=not (no_stream or as_json), as_json=as_json, show_usage=show_usage)


def load_tool(spec: str) -> Any:
    """The function named by ``--tool MODULE:FUNCTION`` (the module found on ``sys.path`` or in the cwd)."""
    import importlib
    import sys

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{spec!r} is not MODULE:FUNCTION; e.g. --tool mytools:get_weather",
                                 param_hint="--tool")
    if "" not in sys.path:
        sys.path.insert(0, "")  # a tools.py next to the user is found, as with `python -m`
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise click.BadParameter(f"cannot import module {module_name!r} ({exc}); run from the directory that "
                                 "holds it or add that directory to PYTHONPATH", param_hint="--tool") from None
    except Exception as exc:  # the user's module failed while importing
        raise click.BadParameter(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
                                 param_hint="--tool") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise click.BadParameter(f"module {module_name!r} has no {attr!r}; check the name after the colon",
                                     param_hint="--tool")
        target = getattr(target, part)
    if not callable(target):
        raise click.BadParameter(f"{spec} is a {type(target).__name__}, not a function; name a function",
                                 param_hint="--tool")
    return target


def show_tool_call(call: dict[str, Any]) -> None:
    """One finished tool call, dim on stderr so the answer on stdout stays clean."""
    result = str(call["result"])
    if len(result) > 200:
        result = result[:200] + "…"
    mark = "->" if call["ok"] else "-> failed:"
    click.echo(click.style(f"[tool] {call['name']}({call['arguments']}) {mark} {result} "
                           f"({call['duration_ms']:.0f} ms)", dim=True), err=True)


def _load_logged(convo: Conversation, cid: str | None, *, keep_model: bool) -> None:
    """Put a logged conversation's history into ``convo`` (read even when logging is off)."""
    from kimiflow.cli.home import logs_path
    from kimiflow.cli.logstore import LogStore

    store = convo.store or LogStore(logs_path())
    conversation_id = cid or store.last_conversation_id()
    exchanges = store.conversation(conversation_id) if conversation_id else []
    if not exchanges:
        what = f"conversation {cid!r}" if cid else "conversation yet"
        raise click.UsageError(f"no logged {what} to continue; see `kimiflow logs`.")
    convo.load(exchanges)
    if not keep_model:
        convo.model = exchanges[-1].model


def _ask_once(convo: Conversation, prompt: str, *, stream: bool, as_json: bool, show_usage: bool) -> None:
    from kimiflow.cli.output import AnswerPrinter, echo_json, format_cost, format_usage

    # Reasoning goes to stderr so a pipe receives the answer alone.
    printer = AnswerPrinter(reasoning_to_stderr=True)
    from kimiflow.tool_loop import MaxStepsExceededError

    try:
        reply = convo.send(
            prompt, stream=stream, on_text=None if as_json else printer.text,
            on_reasoning=None if as_json else printer.reasoning,
        )
    except MaxStepsExceededError as exc:
        # Never silent: say where it stopped and how to go on, and fail the command.
        click.echo(f"Error: no answer: the model still asked for tools after --max-steps {convo.max_steps} "
                   f"steps ({exc.steps} completions). Raise --max-steps or check the tools.", err=True)
        raise click.exceptions.Exit(3) from None
    if as_json:
        echo_json(reply.completion.to_dict() if reply.completion is not None else None)
    elif reply.content and not reply.content.endswith("\n"):
        click.echo()
    if reply.interrupted:
        click.echo("[cancelled]" if reply.cancelled else "[interrupted]", err=True)
    if show_usage:
        usage = reply.usage
        tokens = format_usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) if usage \
            else format_usage(None, None, None)
        click.echo(f"Usage: {tokens}, cost {format_cost(reply.cost_cny)}, {reply.latency_ms:.0f} ms"
                   + (f", request {reply.request_id}" if reply.request_id else ""), err=True)
    if reply.interrupted:
        raise click.exceptions.Exit(130)


def _load_schema(path: str) -> dict[str, Any]:
    import json
    from pathlib import Path

    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--schema") from None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})",
                                 param_hint="--schema") from None
    if not isinstance(schema, dict):
        raise click.BadParameter(f"{path} must hold a JSON Schema object, e.g. {{\"type\": \"object\", ...}}",
                                 param_hint="--schema")
    return schema


def _answer_as_json(convo: Conversation, prompt: str, schema: dict[str, Any], *, as_json: bool,
                    show_usage: bool) -> None:
    """One validated JSON answer on stdout (``--json``: the whole last completion); not logged."""
    import json

    from kimiflow.cli.output import echo_json, format_cost, format_usage
    from kimiflow.core.pricing import usage_cost_cny

    messages: list[Any] = [{"role": "system", "content": convo.system}] if convo.system else []
    messages.append({"role": "user", "content": prompt})
    resp = convo.client.chat.completions.parse(model=convo.model, messages=messages, response_format=schema,
                                               **convo.params)
    if as_json:
        echo_json(resp.to_dict())
    else:
        click.echo(json.dumps(resp.choices[0].message.parsed, ensure_ascii=False))
    if show_usage and resp.usage is not None:
        usage = resp.usage
        click.echo(f"Usage: {format_usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)}, "
                   f"cost {format_cost(usage_cost_cny(resp.model or convo.model, usage))}, "
                   f"{len(resp.attempt_completions)} attempt(s)", err=True)
