"""Balance and token-count responses (docs/kimi-api.md §7.2–7.3)."""

from __future__ import annotations

import msgspec

from kimiflow.types._base import WireModel


class BalanceData(WireModel):
    available_balance: float = 0.0
    voucher_balance: float = 0.0
    cash_balance: float = 0.0


class Balance(WireModel):
    """``GET /v1/users/me/balance``. Units: CNY on api.moonshot.cn, USD on api.moonshot.ai."""

    code: int = 0
    data: BalanceData = msgspec.field(default_factory=BalanceData)
    scode: str = "0x0"
    status: bool = True


class TokenCountData(WireModel):
    total_tokens: int = 0


class TokenCount(WireModel):
    """``POST /v1/tokenizers/estimate-token-count``."""

    data: TokenCountData = msgspec.field(default_factory=TokenCountData)

    @property
    def total_tokens(self) -> int:
        return self.data.total_tokens
