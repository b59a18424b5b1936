"""kimiflow's REST gateway: one server holds the Kimi key; every business system gets a virtual key.

>>> settings = GatewaySettings(UpstreamConfig(base_url, api_key), admin_token, db_path)
>>> gateway = Gateway(settings); url = await serve(gateway, "127.0.0.1", 8787)

``kimiflow gateway serve|keys|usage`` is the command line over the same pieces. Modules: ``app``
(the server), ``proxy`` (the caller's API and its billing rules), ``admin`` (``/admin/``),
``admission`` (limits and budgets), ``upstream`` (retries), ``watch`` (usage in SSE),
``store`` and ``ledger`` (keys, ledger, rollups, audit; the durability rule), ``keys``, ``metrics``.
"""

from kimiflow.gateway.app import REQUEST_ID_HEADER, Gateway, GatewaySettings
from kimiflow.gateway.keys import KeyLimits, KeyRecord
from kimiflow.gateway.routes import build_app, serve
from kimiflow.gateway.store import GatewayStore, LedgerRow, SQLiteStore, open_store
from kimiflow.gateway.upstream import UpstreamConfig

__all__ = [
    "REQUEST_ID_HEADER",
    "Gateway",
    "GatewaySettings",
    "GatewayStore",
    "KeyLimits",
    "KeyRecord",
    "LedgerRow",
    "SQLiteStore",
    "UpstreamConfig",
    "build_app",
    "open_store",
    "serve",
]
