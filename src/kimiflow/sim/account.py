"""The account endpoints: ``GET /v1/models``, ``GET /v1/users/me/balance`` and
``POST /v1/tokenizers/estimate-token-count`` (kimi-api.md §7)."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from kimiflow.core.catalog import MODELS
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.sim.faults import Fault
from kimiflow.sim.http import json_or_fault, read_body
from kimiflow.sim.state import SimState
from kimiflow.sim.validation import decode_json_object, resolve_model, validate_messages

_encode = msgspec.json.Encoder().encode


@cache
def models_body() -> bytes:
    """The model list, encoded once: the catalog never changes while a process runs."""
    data: list[dict[str, Any]] = [
        {
            "id": m.id,
            "object": "model",
            "created": m.created,
            "owned_by": "moonshot",
            "root": m.id,
            "parent": None,
            "permission": [],
            "context_length": m.context_length,
            "supports_image_in": m.vision,
            "supports_video_in": m.vision and m.reasoning,
            "supports_reasoning": m.reasoning,
        }
        for m in MODELS.values()
    ]
    return _encode({"object": "list", "data": data})


async def list_models(state: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    return await json_or_fault(request, models_body(), fault)


async def estimate_tokens(
    state: SimState, request: web.BaseRequest, key: str, fault: Fault | None
) -> web.StreamResponse:
    data = decode_json_object(await read_body(request))
    resolve_model(data)
    messages = validate_messages(data)
    payload = {"data": {"total_tokens": estimate_message_tokens(messages)}}
    return await json_or_fault(request, _encode(payload), fault)


async def balance_info(state: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    cash = round(state.balance, 5)
    voucher = 0.0
    # Kimi: cash may go negative (arrears); available then equals the voucher balance (§7.3).
    available = voucher + max(cash, 0.0)
    payload = {
        "code": 0,
        "data": {"available_balance": available, "voucher_balance": voucher, "cash_balance": cash},
        "scode": "0x0",
        "status": True,
    }
    return await json_or_fault(request, _encode(payload), fault)
