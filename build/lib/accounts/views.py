from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from . import services


def _tokens_context(request, **extra):
    return {"api_tokens": request.user.api_tokens.all(), **extra}


@login_required
@require_GET
def settings_page(request):
    return render(request, "accounts/settings.html", _tokens_context(request))


@login_required
@require_POST
def api_token_create(request):
    try:
        token, raw_token = services.api_token_create(user=request.user, name=request.POST.get("name", ""))
    except services.TokenError as exc:
        return render(request, "accounts/_api_tokens.html", _tokens_context(request, error=str(exc)))
    return render(request, "accounts/_api_tokens.html", _tokens_context(request, new_token=raw_token, new_token_id=token.pk))


@login_required
@require_POST
def api_token_revoke(request, token_id):
    services.api_token_revoke(user=request.user, token_id=token_id)
    return render(request, "accounts/_api_tokens.html", _tokens_context(request))
