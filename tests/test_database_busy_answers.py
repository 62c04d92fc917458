"""The fast tier of "a database that cannot take a request answers 503 with Retry-After, never 500"
(tests/test_database_connections_on_postgresql.py does it on a real PostgreSQL): which errors count,
and the answer a view, a middleware and the error handler give."""

import psycopg
import pytest
from django.db import OperationalError
from django.test import RequestFactory
from psycopg_pool import PoolTimeout

from accounts.services import api_token_create
from studio.database import database_unavailable
from studio.middleware import DatabaseBusyMiddleware
from studio.views import server_error


def wrapped(cause: Exception) -> OperationalError:
    """As Django's wrap_database_errors raises it."""
    try:
        raise OperationalError(*cause.args) from cause
    except OperationalError as exc:
        return exc


@pytest.mark.parametrize(
    "cause, busy",
    [
        (PoolTimeout("couldn't get a connection after 10.00 sec"), True),
        (psycopg.OperationalError("connection failed: FATAL:  sorry, too many clients already"), True),
        (psycopg.errors.TooManyConnections("too many connections for role"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
    ],
)
def test_what_counts_as_a_database_that_cannot_take_the_request(cause, busy):
    assert database_unavailable(wrapped(cause)) is busy
    assert not database_unavailable(ValueError("x")) and not database_unavailable(OperationalError("locked"))


@pytest.mark.django_db
def test_an_api_view_that_meets_a_busy_database_answers_503_json_with_retry_after(client, alice, monkeypatch):
    from chat.serving import openai_api

    token = api_token_create(user=alice, name="app")[1]

    def refuse():
        raise wrapped(PoolTimeout("couldn't get a connection after 10.00 sec"))

    monkeypatch.setattr(openai_api, "_model_list", refuse)
    answer = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 503 and answer["Retry-After"] == "5"
    assert answer.json()["code"] == "database_busy"


def test_a_page_gets_the_error_page_and_the_error_handler_does_the_same():
    request = RequestFactory().get("/chat/")
    busy = wrapped(psycopg.OperationalError("connection failed"))
    page = DatabaseBusyMiddleware(lambda r: None).process_exception(request, busy)
    assert page.status_code == 503 and page["Retry-After"] == "5" and b"database is busy" in page.content
    try:  # Django calls its 500 handler while handling what a middleware raised
        raise busy
    except OperationalError:
        handled = server_error(request)
    assert handled.status_code == 503 and handled["Retry-After"] == "5"
    try:
        raise ValueError("a bug")
    except ValueError:
        assert server_error(request).status_code == 500
