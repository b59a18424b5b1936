"""kimiflow: the Python toolkit for the Kimi (Moonshot AI) chat API.

>>> from kimiflow import Kimi
>>> Kimi().ask("你好")
"""

from kimiflow._version import __version__
from kimiflow.client import AsyncKimi, Kimi
from kimiflow.core.config import Timeouts
from kimiflow.core.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigError,
    ContentFilterError,
    DeadlineExceededError,
    EngineOverloadedError,
    IncompleteStreamError,
    InternalServerError,
    InvalidArgumentError,
    KimiflowError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    StreamError,
    StreamIdleTimeoutError,
)
from kimiflow.core.retry import RetryPolicy
from kimiflow.streaming import AsyncChatCompletionStream, AsyncStream, ChatCompletionStream, Stream
from kimiflow.types import (
    WEB_SEARCH_TOOL,
    ChatCompletion,
    ChatCompletionChunk,
    Usage,
)
from kimiflow.types.parsed import ParsedChatCompletion

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kimiflow.structured import (
        AnswerBudgetExceededError,
        AnswerValidationError,
        StructuredAnswerError,
        TruncatedAnswerError,
    )
    from kimiflow.tool_loop import MaxStepsExceededError, ToolEvent, ToolLoopError, ToolRunResult

_LAZY = {
    "AnswerBudgetExceededError": "kimiflow.structured",
    "AnswerValidationError": "kimiflow.structured",
    "StructuredAnswerError": "kimiflow.structured",
    "TruncatedAnswerError": "kimiflow.structured",
    "MaxStepsExceededError": "kimiflow.tool_loop",
    "ToolEvent": "kimiflow.tool_loop",
    "ToolLoopError": "kimiflow.tool_loop",
    "ToolRunResult": "kimiflow.tool_loop",
}
"""Public names of the parse() and run_tools() layers, loaded on first use so ``import kimiflow`` stays light."""


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kimiflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "WEB_SEARCH_TOOL",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AnswerBudgetExceededError",
    "AnswerValidationError",
    "AsyncChatCompletionStream",
    "AsyncKimi",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionStream",
    "ClientClosedError",
    "ConfigError",
    "ContentFilterError",
    "DeadlineExceededError",
    "EngineOverloadedError",
    "IncompleteStreamError",
    "InternalServerError",
    "InvalidArgumentError",
    "Kimi",
    "KimiflowError",
    "MalformedResponseError",
    "MaxStepsExceededError",
    "NotFoundError",
    "ParsedChatCompletion",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "RetryPolicy",
    "Stream",
    "StreamError",
    "StreamIdleTimeoutError",
    "StructuredAnswerError",
    "Timeouts",
    "ToolEvent",
    "ToolLoopError",
    "ToolRunResult",
    "TruncatedAnswerError",
    "Usage",
    "__version__",
]
