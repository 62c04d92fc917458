"""API tokens: create (the raw token is returned once), revoke, authenticate. People (staff only):
add, make staff, a new first password, deactivate, remove; every change recorded (PeopleChange)."""

from __future__ import annotations

import re
import secrets

from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.models import Session
from django.db import models, transaction
from django.utils import timezone

from studio.errors import StudioError
from studio.input_checks import unstorable_reason

from .models import ApiToken, PeopleChange, token_digest

TOKEN_PREFIX = "cps_"


class TokenError(StudioError):
    pass


class PeopleError(StudioError):
    """A change to the team the studio refuses; the message says why."""


class NotStaff(PeopleError):
    status = 403


USERNAME_PATTERN = r"^[\w.@+-]{1,150}$"


def _require_staff(by, doing: str) -> None:
    if not (getattr(by, "is_authenticated", False) and by.is_staff and by.is_active):
        raise NotStaff(f"Only staff {doing}.")


def _record(*, by, person, action: str, detail: str = "") -> PeopleChange:
    return PeopleChange.objects.create(
        actor=by,
        actor_name=by.get_username(),
        person=person,
        person_name=person.get_username(),
        action=action,
        detail=detail[:300],
    )


def _require_may_change(*, by, person, doing: str) -> None:
    """The rules for changing someone else's account: never your own this way, a superuser only
    by a superuser (staff could otherwise take over the account that administers the studio),
    and never the last active staff member."""
    if person.pk == by.pk:
        raise PeopleError(f"You cannot {doing} yourself (ask another staff member).")
    if person.is_superuser and not by.is_superuser:
        raise PeopleError(f"Only a superuser can {doing} a superuser.")
    if (
        person.is_staff
        and person.is_active
        and not type(person).objects.filter(is_staff=True, is_active=True).exclude(pk=person.pk).exists()
    ):
        raise PeopleError(f"{person.get_username()} is the last staff member: make someone else staff first.")


def person_create(*, by, username: str, email: str = "", is_staff: bool = False):
    """A new account made by staff: returns (user, its first password, shown once). The person
    changes the password on their settings page."""
    _require_staff(by, "add people")
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
    with transaction.atomic():
        user = users.create_user(username=username, email=email, password=password, is_staff=is_staff)
        _record(by=by, person=user, action=PeopleChange.Action.ADDED, detail="as staff" if is_staff else "")
    return user, password


def person_set_staff(*, by, person, is_staff: bool) -> None:
    _require_staff(by, "make someone staff")
    if person.pk == by.pk and not is_staff:
        raise PeopleError("You cannot take staff away from yourself (ask another staff member).")
    if person.is_staff == is_staff:
        return
    if not is_staff:
        _require_may_change(by=by, person=person, doing="take staff away from")
    with transaction.atomic():
        person.is_staff = is_staff
        person.save(update_fields=["is_staff"])
        _record(
            by=by, person=person, action=PeopleChange.Action.MADE_STAFF if is_staff else PeopleChange.Action.STAFF_TAKEN
        )


def person_set_password(*, by, person) -> str:
    """A new first password for someone who lost theirs, shown once to the staff member who set
    it. Their old password stops working, and so do their open sessions (Django checks each
    session against the password); their API tokens are left alone."""
    _require_staff(by, "set someone's password")
    _require_may_change(by=by, person=person, doing="set a new first password for")
    password = secrets.token_urlsafe(12)
    with transaction.atomic():
        person.set_password(password)
        person.save(update_fields=["password"])
        _end_sessions(person)
        _record(by=by, person=person, action=PeopleChange.Action.PASSWORD_SET)
    return password


def person_set_active(*, by, person, active: bool) -> None:
    """Deactivate someone (they cannot log in; their sessions end and their API tokens are
    revoked; everything they made stays), or let them in again (with new tokens of their own)."""
    _require_staff(by, "deactivate people")
    if person.is_active == active:
        return
    if not active:
        _require_may_change(by=by, person=person, doing="deactivate")
    with transaction.atomic():
        person.is_active = active
        person.save(update_fields=["is_active"])
        detail = ""
        if not active:
            sessions = _end_sessions(person)
            tokens = ApiToken.objects.filter(user=person, revoked_at=None).update(revoked_at=timezone.now())
            detail = f"ended {_count(sessions, 'session')}, revoked {_count(tokens, 'API token')}"
        _record(
            by=by,
            person=person,
            detail=detail,
            action=PeopleChange.Action.REACTIVATED if active else PeopleChange.Action.DEACTIVATED,
        )


def _end_sessions(person) -> int:
    """Delete the person's sessions where they are stored in the database (the default engine).
    Whatever the engine, Django honours no session of an inactive user or of an older password."""
    if settings.SESSION_ENGINE not in (
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cached_db",
    ):
        return 0
    theirs = [
        session.pk
        for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if session.get_decoded().get(SESSION_KEY) == str(person.pk)
    ]
    Session.objects.filter(pk__in=theirs).delete()
    return len(theirs)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' if n != 1 else ''}"


def removal_plan(person) -> dict:
    """What removing `person` would do: {"deletes": ["3 conversations", ...], "keeps": ["2 prompt
    versions", ...]}. `keeps` is the team's work they made (a prompt, a version, a failure case,
    an evaluation, a fine-tune: kept with their name, so the account cannot go) or shared with
    the team (a knowledge base others read): while there is any, removal is refused and
    deactivation is the way. `deletes` is their own private things, which go with them."""
    deletes, keeps = [], []
    # Every foreign key to the user, those without a reverse name (related_name="+") included.
    relations = [
        field
        for field in type(person)._meta.get_fields(include_hidden=True)
        if field.auto_created and not field.concrete and (field.one_to_many or field.one_to_one)
    ]
    for relation in relations:
        if relation.on_delete not in (models.CASCADE, models.PROTECT, models.RESTRICT):
            continue  # SET_NULL keeps the row without them
        model = relation.related_model
        theirs = model._default_manager.filter(**{relation.field.name: person})
        if relation.on_delete is models.CASCADE:
            if any(field.name == "shared" for field in model._meta.fields):
                shared = theirs.filter(shared=True).count()
                if shared:
                    keeps.append(f"{shared} shared {_named(model, shared)}")
                theirs = theirs.exclude(shared=True)
            found = theirs.count()
            if found:
                deletes.append(f"{found} {_named(model, found)}")
        else:
            found = theirs.count()
            if found:
                keeps.append(f"{found} {_named(model, found)}")
    return {"deletes": deletes, "keeps": keeps}


def _named(model, count: int) -> str:
    return str(model._meta.verbose_name if count == 1 else model._meta.verbose_name_plural)


def person_remove(*, by, person, confirm: str) -> str:
    """Remove someone who made nothing the team keeps (removal_plan), with their private things
    (conversations, private knowledge bases, tokens, saved selections, settings), once the staff
    member typed their user name. Returns what was deleted, in words."""
    _require_staff(by, "remove people")
    _require_may_change(by=by, person=person, doing="remove")
    plan = removal_plan(person)
    if plan["keeps"]:
        raise PeopleError(
            f"{person.get_username()} made work the team keeps ({', '.join(plan['keeps'])}): "
            "deactivate them instead (they cannot log in, and their work stays)."
        )
    if (confirm or "").strip() != person.get_username():
        raise PeopleError(f"Type “{person.get_username()}” to confirm the removal.", "confirm")
    detail = "deleted " + ", ".join(plan["deletes"]) if plan["deletes"] else "nothing of theirs to delete"
    with transaction.atomic():
        _end_sessions(person)
        _record(by=by, person=person, action=PeopleChange.Action.REMOVED, detail=detail)
        try:
            person.delete()  # the record's person link is set to null; its name stays
        except (models.ProtectedError, models.RestrictedError):
            raise PeopleError(f"{person.get_username()} made work the team keeps: deactivate them instead.") from None
    return detail


def people_changes(*, last: int = 20):
    return PeopleChange.objects.all()[:last]


def person_lock(user) -> None:
    """Inside a transaction: hold the person's row until it ends. A per-person limit that counts
    and then creates does both under it, so simultaneous requests of one person take turns
    instead of all passing the count (PostgreSQL: a row lock; SQLite: its transactions already
    take the write lock when they begin, settings.DATABASES)."""
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
