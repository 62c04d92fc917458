"""API tokens: create (the raw token is returned once), revoke, authenticate."""

from __future__ import annotations

import secrets

from django.utils import timezone

from studio.input_checks import unstorable_reason

from .models import ApiToken, token_digest

TOKEN_PREFIX = "cps_"


class TokenError(Exception):
    pass


def person_lock(user) -> None:
    """Inside a transaction: hold the person's row until it ends. A per-person limit that counts
    and then creates does both under it, so simultaneous requests of one person take turns
    instead of all passing the count (PostgreSQL: a row lock; SQLite: its transactions already
    take the write lock when they begin, settings.DATABASES)."""
    from django.contrib.auth import get_user_model

    get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).first()


def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise TokenError("Give the token a name of 1 to 100 characters (where it is used, say).")
    reason = unstorable_reason(name)
    if reason:
        raise TokenError(f"The name {reason}.")
    raw_token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=raw_token[:10], digest=token_digest(raw_token))
    return token, raw_token


def api_token_revoke(*, user, token_id: int) -> None:
    """Revoke one of `user`'s own tokens (someone else's id changes nothing)."""
    ApiToken.objects.filter(user=user, pk=token_id, revoked_at=None).update(revoked_at=timezone.now())


def user_for_api_token(raw_token: str):
    """The active user a token belongs to, or None."""
    if not raw_token or not raw_token.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(digest=token_digest(raw_token), revoked_at=None).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user
