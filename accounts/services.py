"""API tokens: create (the raw token is returned once), revoke, authenticate."""

from __future__ import annotations

import secrets

from django.utils import timezone

from studio.errors import StudioError
from studio.input_checks import unstorable_reason

from .models import ApiToken, token_digest

TOKEN_PREFIX = "cps_"


class TokenError(StudioError):
    pass


class PeopleError(StudioError):
    """A change to the team the studio refuses; the message says why."""


USERNAME_PATTERN = r"^[\w.@+-]{1,150}$"


def person_create(*, by, username: str, email: str = "", is_staff: bool = False):
    """A new account made by staff: returns (user, its first password, shown once). The person
    changes the password on their settings page."""
    import re

    from django.contrib.auth import get_user_model

    if not by.is_staff:
        raise PeopleError("Only staff add people.")
    username = (username or "").strip()
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise PeopleError("A user name is 1 to 150 letters, digits and @ . + - _ (no spaces).")
    email = (email or "").strip()
    if len(email) > 254 or (email and "@" not in email) or unstorable_reason(email):
        raise PeopleError("That e-mail address does not look right.")
    users = get_user_model().objects
    if users.filter(username__iexact=username).exists():
        raise PeopleError(f"There is someone called “{username}” already.")
    password = secrets.token_urlsafe(12)
    user = users.create_user(username=username, email=email, password=password, is_staff=is_staff)
    return user, password


def person_set_staff(*, by, person, is_staff: bool) -> None:
    if not by.is_staff:
        raise PeopleError("Only staff make someone staff.")
    if person.pk == by.pk and not is_staff:
        raise PeopleError("You cannot take staff away from yourself (ask another staff member).")
    person.is_staff = is_staff
    person.save(update_fields=["is_staff"])


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
