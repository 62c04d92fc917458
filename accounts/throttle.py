"""Throttling password guesses (django-axes) and bad API tokens (django-ratelimit).

Logins: the failing source is throttled, never the person. An account is locked after
settings.AXES_FAILURE_LIMIT failures in a row *from one address*, for that address only, for
settings.AXES_COOLOFF_TIME: someone guessing the admin's password locks the admin out of their
own address, not out of the studio. An address that failed on settings.LOGIN_ADDRESS_ACCOUNT_LIMIT
different accounts (guessing names) gets every further wrong password refused with the lockout
page, while a right password still logs in: a team behind one NAT keeps working when one of
them guesses. Admins unlock on /admin/axes/accessattempt/ (delete the attempts) or with
`manage.py axes_reset_username`.

API tokens: an address that sends more than settings.API_BAD_TOKENS_PER_MINUTE bad tokens
a minute gets 429; a valid token is checked first and never counted.
"""

from __future__ import annotations

import logging

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_ip_address
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.shortcuts import render
from django_ratelimit.core import is_ratelimited

from studio.errors import StudioError

from .services import user_for_api_token

log = logging.getLogger("studio")


class LoginLockoutHandler(AxesDatabaseHandler):
    def is_locked(self, request, credentials=None) -> bool:
        if super().is_locked(request, credentials):  # this account from this address: AXES_FAILURE_LIMIT failures
            return True
        if not self._address_guessed_many_accounts(request):
            return False
        # Only the wrong passwords of such an address are refused: a right one still logs in.
        credentials = credentials or {}
        return (
            ModelBackend().authenticate(
                request, username=credentials.get("username"), password=credentials.get("password")
            )
            is None
        )

    @staticmethod
    def _address_guessed_many_accounts(request) -> bool:
        address = getattr(request, "axes_ip_address", None) or get_client_ip_address(request)
        guessed_accounts = (
            AccessAttempt.objects.filter(ip_address=address, attempt_time__gte=get_cool_off_threshold(request))
            .values("username")
            .distinct()
            .count()
        )
        return guessed_accounts >= settings.LOGIN_ADDRESS_ACCOUNT_LIMIT


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked-out login gets (429), in the studio's layout: which lock it is."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    account_locked = AxesDatabaseHandler.is_locked(LoginLockoutHandler(), request, credentials)
    response = render(
        request,
        "registration/locked_out.html",
        {
            "username": username[:150] if account_locked else "",
            "minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
        },
        status=429,
    )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response


class ApiRefusal(StudioError):
    """No valid token (401), or too many bad ones from this address (429)."""

    retry_after_s = 60  # bad tokens are counted a minute at a time

    def __init__(self, status: int, message: str):
        super().__init__(message, status=status)


def api_user(request):
    """The user whose token the request carries (`Authorization: Bearer <token>`), or ApiRefusal:
    401 without a valid token, 429 when this address has sent too many bad ones."""
    scheme, _, raw_token = request.headers.get("Authorization", "").partition(" ")
    user = user_for_api_token(raw_token.strip()) if scheme.lower() == "bearer" else None
    if user is not None:
        return user
    if _bad_token_counted_over_limit(request):
        raise ApiRefusal(
            429,
            "Too many requests with a missing or wrong API token from this address: wait a "
            "minute, then send a valid token (Authorization: Bearer <token>).",
        )
    raise ApiRefusal(401, "Send an API token: Authorization: Bearer <token> (create one on your settings page).")


def _bad_token_counted_over_limit(request) -> bool:
    try:
        return is_ratelimited(
            request, group="api-bad-token", key="ip", increment=True, rate=f"{settings.API_BAD_TOKENS_PER_MINUTE}/m"
        )
    except Exception:  # the cache (Redis) is restarting: answer 401 rather than 500
        log.warning("API token throttle unavailable", exc_info=True)
        return False
