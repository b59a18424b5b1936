"""The default bounds of the two loops a client can run for its caller, sans-I/O.

They live here, apart from the loops themselves (``kimiflow.parse_loop``, ``kimiflow.tool_loop``), so
the clients can name them in their signatures while the loops load only on first use: ``import
kimiflow`` stays light.
"""

from __future__ import annotations

from typing import Literal

DEFAULT_MAX_VALIDATION_RETRIES = 2
"""``parse()``: re-asks after an answer that is not valid JSON of the type (so up to 3 requests)."""

DEFAULT_MAX_STEPS = 10
"""``run_tools()``: completions in one loop before ``MaxStepsExceededError``."""

StructuredMode = Literal["json_schema", "json_object"]
"""How a structured answer is asked for: Kimi's ``json_schema`` response format, or ``json_object`` with
the schema in the system prompt (for models that take no schema)."""
