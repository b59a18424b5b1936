"""The account endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /v1/users/me/balance`` and
``POST /v1/tokenizers/estimate-token-count`` (docs/kimi-api.md §7)."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from kimiflow.core.catalog import MODELS, ModelInfo
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.sim import errors
from kimiflow.sim.faults import Fault
from kimiflow.sim.http import json_or_fault, read_body
from kimiflow.sim.state import SimState
from kimiflow.sim.validation import decode_json_object, resolve_model, validate_messages

_encode = msgspec.json.Encoder().encode


MODELS_PATH = "/v1/models"
MODEL_PATH_PREFIX = MODELS_PATH + "/"


def _model_object(m: ModelInfo) -> dict[str, Any]:
    return {
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


def _served(catalog: str) -> list[ModelInfo]:
    return [m for m in MODELS.values() if catalog == "full" or m.online_2026]


@cache
def models_body(catalog: str = "full") -> bytes:
    """The model list of one catalog, encoded once: the catalog never changes while a process runs."""
    return _encode({"object": "list", "data": [_model_object(m) for m in _served(catalog)]})


@cache
def model_body(model_id: str, catalog: str = "full") -> bytes | None:
    """One model's object, encoded once, or None when this catalog does not serve it."""
    for m in _served(catalog):
        if m.id == model_id:
            return _encode(_model_object(m))
    return None


async def list_models(state: SimState, request: web.BaseRequest, key: str, fault: Fault | None) -> web.StreamResponse:
    return await json_or_fault(request, models_body(state.config.catalog), fault)


async def retrieve_model(
    state: SimState, request: web.BaseRequest, key: str, fault: Fault | None
) -> web.StreamResponse:
    """``GET /v1/models/{id}``: the list's object for that model, or Kimi's model 404."""
    model_id = request.path[len(MODEL_PATH_PREFIX):]
    body = model_body(model_id, state.config.catalog) if model_id in MODELS else None
    if body is None:
        raise errors.model_not_found(model_id)
    return await json_or_fault(request, body, fault)


async def estimate_tokens(
    state: SimState, request: web.BaseRequest, key: str, fault: Fault | None
) -> web.StreamResponse:
    data = decode_json_object(await read_body(request))
    resolve_model(data, state.config.catalog)
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
