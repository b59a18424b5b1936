from __future__ import annotations

from typing import Any

import pytest

from tests.client.twins import Twin


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest, sim: Any) -> Twin:
    """The same behaviour test, once with ``Kimi`` and once with ``AsyncKimi``, against the simulator."""
    return Twin(request.param, api_key=sim.api_key, base_url=sim.base_url)
