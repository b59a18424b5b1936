"""What Kimi charges a chat request against TPM/TPD: prompt tokens + its output budget (docs/kimi-api.md §6.3).

The budget is the request's ``max_completion_tokens`` / ``max_tokens`` or, when it sends neither, the
model's default (``core.catalog``), whatever the answer then uses: Kimi never refunds the unused part.
So after an answer only the prompt part is corrected, from the real ``usage.prompt_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kimiflow.core.catalog import default_max_tokens
from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.types.chat import Usage


@dataclass(frozen=True)
class Charge:
    """The tokens one request is charged: ``prompt_tokens`` (an estimate until settled) + ``max_tokens``.

    >>> Charge(prompt_tokens=120, max_tokens=512).tokens
    632
    """

    prompt_tokens: int = 0
    max_tokens: int = 0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0 or self.max_tokens < 0:
            raise InvalidArgumentError(
                f"a Charge cannot be negative, got prompt_tokens={self.prompt_tokens}, max_tokens={self.max_tokens}"
            )

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens

    def settled(self, usage: Usage | None) -> int:
        """What Kimi counted once the answer is in: the real prompt + the whole output budget.

        The completion part never drops below the budget charged (Kimi counts the budget, not the
        output); ``None`` (no usage reported) keeps the estimate.
        """
        if usage is None:
            return self.tokens
        return usage.prompt_tokens + max(self.max_tokens, usage.completion_tokens)


def request_charge(body: Mapping[str, Any]) -> Charge:
    """The ``Charge`` Kimi applies to a chat completion request ``body``.

    >>> request_charge({"model": "kimi-k3", "messages": [{"role": "user", "content": "你好"}]})
    Charge(prompt_tokens=8, max_tokens=131072)
    """
    budget = body.get("max_completion_tokens") or body.get("max_tokens")
    if budget is None:
        model = body.get("model")
        budget = default_max_tokens(model if isinstance(model, str) else None)
    return Charge(estimate_message_tokens(body.get("messages") or ()), int(budget))
