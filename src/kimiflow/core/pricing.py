"""Cost of a request in CNY from its usage and the model's price (docs/kimi-api.md §8).

Billing counts prompt + actual completion tokens; cached prompt tokens are billed at the
cache-hit price where the model has one.
"""

from __future__ import annotations

from kimiflow.core.catalog import model_info
from kimiflow.types.chat import Usage


def cost_cny(model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
    """CNY charged for one request; 0.0 for a model without a known price.

    >>> cost_cny("moonshot-v1-8k", 1_000_000, 0)
    2.0
    """
    info = model_info(model)
    if info is None:
        return 0.0
    hit_price = info.cache_hit_price if info.cache_hit_price is not None else info.input_price
    cached = min(max(cached_tokens, 0), prompt_tokens)
    fresh = prompt_tokens - cached
    return (fresh * info.input_price + cached * hit_price + completion_tokens * info.output_price) / 1_000_000


def usage_cost_cny(model: str, usage: Usage | None) -> float:
    """``cost_cny`` for a response's ``usage`` object (0.0 when usage is missing)."""
    if usage is None:
        return 0.0
    return cost_cny(model, usage.prompt_tokens, usage.completion_tokens, usage.cached)
