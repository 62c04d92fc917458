"""HTTP API of monitoring (Bearer tokens, JSON): a prompt's figures. Routes and answers are in
README.md, "Production: monitoring, online evaluation, review, A/B tests"."""

from django.http import JsonResponse

from accounts.api import api_endpoint
from studio.errors import NotFound

from . import selectors


@api_endpoint("GET")
def prompt_metrics(request, user, slug):
    prompt = selectors.prompt_for_monitoring(user, slug)
    if prompt is None:
        raise NotFound(f"There is no prompt “{slug[:100]}”.")
    window = selectors.clean_window(request.GET.get("since"), request.GET.get("until"))
    filters = selectors.clean_filters(request.GET)
    return JsonResponse(selectors.prompt_metrics(prompt=prompt, window=window, filters=filters))
