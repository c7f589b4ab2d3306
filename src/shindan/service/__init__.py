"""The platform service: ``shindan serve`` (the API) and ``shindan admin`` (accounts).

The apps layer: it calls shindan's task functions, never the reverse. Modules:
``settings`` (the service folder and its database URL), ``models`` (SQLAlchemy tables),
``db`` (engines, sessions, Alembic migrations run at start), ``security`` (argon2 password
hashes, API tokens stored as SHA-256 digests), ``accounts`` (sites, users, tokens),
``access`` (which cases a user may see), ``audit`` (the append-only log), ``app`` (FastAPI),
``cli`` (the typer commands).
"""
