"""kimiflow: the Python toolkit for the Kimi (Moonshot AI) chat API."""

from kimiflow.core.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContentFilterError,
    DeadlineExceededError,
    EngineOverloadedError,
    IncompleteStreamError,
    InternalServerError,
    KimiflowError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    StreamError,
    StreamIdleTimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ContentFilterError",
    "DeadlineExceededError",
    "EngineOverloadedError",
    "IncompleteStreamError",
    "InternalServerError",
    "KimiflowError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "StreamError",
    "StreamIdleTimeoutError",
    "__version__",
]
