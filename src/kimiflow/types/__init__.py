"""Wire types shared by the clients and the simulator."""

from kimiflow.types._base import WireModel, decode
from kimiflow.types.account import Balance, BalanceData, TokenCount, TokenCountData
from kimiflow.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChoiceDelta,
    ChoiceDeltaFunction,
    ChoiceDeltaToolCall,
    ChunkChoice,
    CompletionTokensDetails,
    FunctionCall,
    PromptTokensDetails,
    ToolCall,
    Usage,
)
from kimiflow.types.errors import ErrorBody, ErrorDetail
from kimiflow.types.files import FileDeleted, FileList, FileObject
from kimiflow.types.models import Model, ModelList
from kimiflow.types.params import (
    WEB_SEARCH_TOOL,
    ChatCompletionCreateParams,
    MessageParam,
    ToolParam,
)

__all__ = [
    "WEB_SEARCH_TOOL",
    "Balance",
    "BalanceData",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionCreateParams",
    "ChatCompletionMessage",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaFunction",
    "ChoiceDeltaToolCall",
    "ChunkChoice",
    "CompletionTokensDetails",
    "ErrorBody",
    "ErrorDetail",
    "FileDeleted",
    "FileList",
    "FileObject",
    "FunctionCall",
    "MessageParam",
    "Model",
    "ModelList",
    "PromptTokensDetails",
    "TokenCount",
    "TokenCountData",
    "ToolCall",
    "ToolParam",
    "Usage",
    "WireModel",
    "decode",
]
