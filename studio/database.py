"""What the studio calls a database that cannot take a request now (one rule for every entry point:
pages and APIs answer 503 with Retry-After, background sweeps log one line and try again)."""

from django.db import OperationalError


def database_unavailable(exc: BaseException | None) -> bool:
    """True for a Django OperationalError that says the database could not take the request now,
    not that the request was wrong: PostgreSQL refused, dropped or never answered the connection
    (too many clients, starting up, unreachable: psycopg gives no SQLSTATE there), reported a lack
    of resources (SQLSTATE class 53) or is starting up (57P03), or the pool had no connection free
    within DATABASE_POOL_TIMEOUT_SECONDS (psycopg_pool.PoolTimeout). Classified by type and SQLSTATE,
    never by the message's words."""
    if not isinstance(exc, OperationalError):
        return False
    try:
        import psycopg  # noqa: PLC0415 - PostgreSQL's driver: a SQLite studio never loads it
    except ImportError:  # SQLite only: its errors are the studio's own to fix
        return False
    cause = exc.__cause__
    if not isinstance(cause, psycopg.OperationalError):
        return False
    sqlstate = getattr(cause, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("53") or sqlstate == "57P03"
