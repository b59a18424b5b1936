"""Gateway store back ends: ``postgres`` (PostgreSQL via psycopg 3); SQLite lives in ``gateway.store``."""
