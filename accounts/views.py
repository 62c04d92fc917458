from functools import wraps

from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import services


def _tokens_context(request, **extra):
    return {"api_tokens": request.user.api_tokens.all(), **extra}


def _people_context(request, **extra):
    return {
        "people": get_user_model()
        .objects.order_by("username")
        .only("id", "username", "email", "is_staff", "is_superuser", "is_active", "last_login")[:500],
        "people_changes": services.people_changes(),
        **extra,
    }


def _people_panel(request, status=200, **extra):
    return render(request, "accounts/_people.html", _people_context(request, **extra), status=status)


def staff_only(view):
    """People are managed by staff: others get 403, checked on the server for every route."""

    @login_required
    @wraps(view)
    def checked(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("Only staff manage people.")
        return view(request, *args, **kwargs)

    return checked


@login_required
@require_GET
def settings_page(request):
    context = {**_tokens_context(request), "password_form": PasswordChangeForm(request.user)}
    if request.user.is_staff:
        context.update(_people_context(request))
    return render(request, "accounts/settings.html", context)


@login_required
@require_POST
def password_change(request):
    form = PasswordChangeForm(request.user, request.POST)
    if form.is_valid():
        form.save()
        update_session_auth_hash(request, form.user)  # this session stays logged in; the others end
        return render(
            request, "accounts/_password.html", {"password_form": PasswordChangeForm(request.user), "changed": True}
        )
    return render(request, "accounts/_password.html", {"password_form": form}, status=400)


@staff_only
@require_POST
def person_create(request):
    try:
        person, password = services.person_create(
            by=request.user,
            username=request.POST.get("username", ""),
            email=request.POST.get("email", ""),
            is_staff=request.POST.get("is_staff") == "on",
        )
    except services.PeopleError as exc:
        return _people_panel(request, 400, error=str(exc), username=request.POST.get("username", ""))
    return _people_panel(request, new_person=person, new_password=password)


@staff_only
@require_POST
def person_staff(request, person_id):
    person = get_object_or_404(get_user_model(), pk=person_id)
    try:
        services.person_set_staff(by=request.user, person=person, is_staff=request.POST.get("is_staff") == "on")
    except services.PeopleError as exc:
        return _people_panel(request, 400, error=str(exc))
    return _people_panel(request)


@staff_only
@require_POST
def person_password(request, person_id):
    """A new first password, shown once in the panel's answer."""
    person = get_object_or_404(get_user_model(), pk=person_id)
    try:
        password = services.person_set_password(by=request.user, person=person)
    except services.PeopleError as exc:
        return _people_panel(request, 400, error=str(exc))
    return _people_panel(request, new_person=person, new_password=password, password_reset=True)


@staff_only
@require_POST
def person_active(request, person_id):
    person = get_object_or_404(get_user_model(), pk=person_id)
    try:
        services.person_set_active(by=request.user, person=person, active=request.POST.get("active") == "on")
    except services.PeopleError as exc:
        return _people_panel(request, 400, error=str(exc))
    return _people_panel(request)


@staff_only
@require_http_methods(["GET", "POST"])
def person_remove(request, person_id):
    """GET: what removing them would delete (or why it cannot), and the confirmation field.
    POST: remove, once their user name is typed."""
    person = get_object_or_404(get_user_model(), pk=person_id)
    if request.method == "GET":
        return _people_panel(request, removing=person, removal=services.removal_plan(person))
    try:
        detail = services.person_remove(by=request.user, person=person, confirm=request.POST.get("confirm", ""))
    except services.PeopleError as exc:
        return _people_panel(request, 400, removing=person, removal=services.removal_plan(person), error=exc.message)
    return _people_panel(request, removed=f"{person.get_username()} is removed ({detail}).")


@login_required
@require_POST
def api_token_create(request):
    try:
        token, raw_token = services.api_token_create(user=request.user, name=request.POST.get("name", ""))
    except services.TokenError as exc:
        return render(request, "accounts/_api_tokens.html", _tokens_context(request, error=str(exc)))
    return render(
        request, "accounts/_api_tokens.html", _tokens_context(request, new_token=raw_token, new_token_id=token.pk)
    )


@login_required
@require_POST
def api_token_revoke(request, token_id):
    services.api_token_revoke(user=request.user, token_id=token_id)
    return render(request, "accounts/_api_tokens.html", _tokens_context(request))
