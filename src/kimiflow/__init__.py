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
from kimiflow.structured import (
    AnswerBudgetExceededError,
    AnswerValidationError,
    StructuredAnswerError,
    TruncatedAnswerError,
)
from kimiflow.tool_loop import MaxStepsExceededError, ToolEvent, ToolLoopError, ToolRunResult
from kimiflow.types import (
    WEB_SEARCH_TOOL,
    ChatCompletion,
    ChatCompletionChunk,
    Usage,
)
from kimiflow.types.parsed import ParsedChatCompletion

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
