"""What kimiflow knows about Kimi's models: context windows, prices, sampling rules, default output budgets,
thinking, tool support and which models are still online (docs/kimi-api.md §2.1, §2.5, §2.6,
§6.3, §8).

Prices are CNY per million tokens from the China price list (api.moonshot.cn, the default base URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Thinking = Literal["always", "optional", "never"]
"""How a model thinks: ``always`` reasons (``{"type":"disabled"}`` is refused), ``optional`` follows the
``thinking`` parameter (on by default), ``never`` is a plain model that ignores the parameter."""


@dataclass(frozen=True)
class ModelInfo:
    """One model's limits and prices. Prices: CNY per 1M tokens (cache hit, input, output)."""

    id: str
    context_length: int
    input_price: float
    output_price: float
    cache_hit_price: float | None = None
    reasoning: bool = False
    vision: bool = False
    default_temperature: float = 0.3
    fixed_temperature: float | None = None
    created: int = 1712151494
    default_max_tokens: int = 1024
    """The output budget Kimi assumes (and charges against TPM) when a request sends no ``max_tokens``.
    1024 for moonshot-v1 and other older models is the docs' "a good integer such as 1024", not a
    confirmed server default [UNCONFIRMED]; newer models' values are set per entry below."""
    thinking: Thinking = "never"
    keep_all: bool = False
    """Accepts ``thinking: {"keep": "all"}`` (preserved thinking): k2.6, k2.7-code and k3; k2.5 refuses it."""
    fixed_temperature_off: float | None = None
    """The only temperature accepted with thinking off (k2.5/k2.6: 0.6, D7)."""
    fixed_top_p: float | None = None
    fixed_n: int | None = None
    fixed_penalty: float | None = None
    """The only presence/frequency penalty accepted (k2.5/k2.6: 0, D7)."""
    tools: bool = True
    forced_tool_choice: bool = False
    """Accepts ``tool_choice`` "required" or a named function while thinking: kimi-k3 only (T6) [3P]."""
    online_2026: bool = False
    """Still served in late 2026; the 2026-09 docs list the others as retired (docs/kimi-api.md §2.5) [3P]."""

    def thinks(self, requested: bool | None) -> bool:
        """Whether a request reasons: ``requested`` is the ``thinking.type`` sent (None: not sent)."""
        if self.thinking == "optional":
            return True if requested is None else requested
        return self.thinking == "always"


_K2X_DEFAULT = 32_768
"""K2.5/K2.6/K2.7-code's default output budget, as the K2.6 quickstart reports it (docs/kimi-api.md §2.5, §6.3)."""
_THINKING_DEFAULT = 32_768
"""Older thinking models: the reference names no default; K2.x's is the best guess [UNCONFIRMED]."""

MODELS: dict[str, ModelInfo] = {
    m.id: m
    for m in (
        ModelInfo("moonshot-v1-8k", 8_192, 2.0, 10.0, default_temperature=0.0),
        ModelInfo("moonshot-v1-32k", 32_768, 5.0, 20.0, default_temperature=0.0),
        ModelInfo("moonshot-v1-128k", 131_072, 10.0, 30.0, default_temperature=0.0),
        ModelInfo("moonshot-v1-auto", 131_072, 10.0, 30.0, default_temperature=0.0),
        ModelInfo("moonshot-v1-8k-vision-preview", 8_192, 2.0, 10.0, vision=True, default_temperature=0.0),
        ModelInfo("moonshot-v1-32k-vision-preview", 32_768, 5.0, 20.0, vision=True, default_temperature=0.0),
        ModelInfo("moonshot-v1-128k-vision-preview", 131_072, 10.0, 30.0, vision=True, default_temperature=0.0),
        ModelInfo("kimi-latest", 131_072, 10.0, 30.0, 1.0, vision=True),
        ModelInfo("kimi-thinking-preview", 131_072, 200.0, 200.0, reasoning=True, vision=True,
                  default_temperature=1.0, default_max_tokens=_THINKING_DEFAULT, thinking="always", tools=False),
        ModelInfo("kimi-k2-0711-preview", 131_072, 4.0, 16.0, 1.0, default_temperature=0.6),
        ModelInfo("kimi-k2-0905-preview", 262_144, 4.0, 16.0, 1.0, default_temperature=0.6),
        ModelInfo("kimi-k2-turbo-preview", 262_144, 16.0, 64.0, 4.0, default_temperature=0.6),
        ModelInfo("kimi-k2-thinking", 262_144, 4.0, 16.0, 1.0, reasoning=True, default_temperature=1.0,
                  default_max_tokens=_THINKING_DEFAULT, thinking="always"),
        ModelInfo("kimi-k2-thinking-turbo", 262_144, 8.0, 58.0, 1.0, reasoning=True, default_temperature=1.0,
                  default_max_tokens=_THINKING_DEFAULT, thinking="always"),
        ModelInfo("kimi-k2.5", 262_144, 4.0, 21.0, 0.7, reasoning=True, vision=True,
                  default_temperature=1.0, fixed_temperature=1.0, default_max_tokens=_K2X_DEFAULT,
                  thinking="optional",
                  # K2.5/K2.6 sampling is fixed (D7): temperature 1.0 thinking, 0.6 not; top_p 0.95; n 1; penalties 0.
                  fixed_temperature_off=0.6, fixed_top_p=0.95, fixed_n=1, fixed_penalty=0.0),
        ModelInfo("kimi-k2.6", 262_144, 6.5, 27.0, 1.1, reasoning=True, vision=True,
                  default_temperature=1.0, fixed_temperature=1.0, default_max_tokens=_K2X_DEFAULT,
                  thinking="optional", keep_all=True, online_2026=True,
                  # K2.5/K2.6 sampling is fixed (D7): temperature 1.0 thinking, 0.6 not; top_p 0.95; n 1; penalties 0.
                  fixed_temperature_off=0.6, fixed_top_p=0.95, fixed_n=1, fixed_penalty=0.0),
        ModelInfo("kimi-k2.7-code", 262_144, 6.5, 27.0, 1.3, reasoning=True,
                  default_temperature=1.0, fixed_temperature=1.0, default_max_tokens=_K2X_DEFAULT,
                  thinking="always", keep_all=True, online_2026=True),
        # The highspeed variant and kimi-k3 have no captured price list: priced as kimi-k2.7-code [UNCONFIRMED].
        ModelInfo("kimi-k2.7-code-highspeed", 262_144, 6.5, 27.0, 1.3, reasoning=True,
                  default_temperature=1.0, fixed_temperature=1.0, default_max_tokens=_K2X_DEFAULT,
                  thinking="always", keep_all=True, online_2026=True),
        ModelInfo("kimi-k3", 1_048_576, 6.5, 27.0, 1.3, reasoning=True,
                  default_temperature=1.0, fixed_temperature=1.0, default_max_tokens=131_072,
                  thinking="always", keep_all=True, forced_tool_choice=True, online_2026=True),
    )
}

DEFAULT_MODEL = "moonshot-v1-8k"


UNKNOWN_MODEL_MAX_TOKENS = 32_768
"""Output budget assumed for a model the catalog does not know: today's models' default, not v1's 1024,
so an unknown newer model is over- rather than under-charged."""


def default_max_tokens(model: str | None) -> int:
    """The ``max_tokens`` Kimi charges a request of ``model`` that sends none.

    >>> default_max_tokens("kimi-k3")
    131072
    """
    info = MODELS.get(model) if model else None
    return info.default_max_tokens if info is not None else UNKNOWN_MODEL_MAX_TOKENS


def model_info(model: str) -> ModelInfo | None:
    """The catalog entry for ``model``, or ``None`` for a model kimiflow does not know."""
    return MODELS.get(model)


BATCH_MODELS: tuple[str, ...] = ("kimi-k2.6", "kimi-k2.5")
"""The models Kimi's Batch API accepts (docs/kimi-api.md §7.5; a third-party list adds kimi-k2.7-code [UNCONFIRMED])."""
BATCH_DISCOUNT = 0.4
"""Batch API requests cost 40 % less than real-time calls (docs/kimi-api.md §7.5, §8)."""
