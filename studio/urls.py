from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from chat.serving import openai_api
from chat.urls import playground_urlpatterns
from evals.urls import api_urlpatterns as evals_api_urlpatterns
from finetune.urls import api_urlpatterns as finetune_api_urlpatterns
from knowledge.urls import api_urlpatterns as knowledge_api_urlpatterns
from monitoring.urls import api_urlpatterns as monitoring_api_urlpatterns
from online.urls import api_urlpatterns as online_api_urlpatterns
from optimiser.urls import api_urlpatterns as optimiser_api_urlpatterns
from prompts.urls import api_urlpatterns as prompt_api_urlpatterns
from review.urls import api_urlpatterns as review_api_urlpatterns

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("chat/", include("chat.urls")),
    path("prompts/", include((playground_urlpatterns, "playground"))),
    path("prompts/", include("prompts.urls")),
    path("api/", include(prompt_api_urlpatterns)),
    path("api/", include(evals_api_urlpatterns)),
    path("api/", include(finetune_api_urlpatterns)),
    path("api/", include(knowledge_api_urlpatterns)),
    path("api/", include(optimiser_api_urlpatterns)),
    path("api/", include(monitoring_api_urlpatterns)),
    path("api/", include(online_api_urlpatterns)),
    path("api/", include(review_api_urlpatterns)),
    path("fine-tunes/", include("finetune.urls")),
    path("knowledge/", include("knowledge.urls")),
    path("optimisations/", include("optimiser.urls")),
    path("monitoring/", include("monitoring.urls")),
    path("online-evaluations/", include("online.urls")),
    path("review/", include("review.urls")),
    # The OpenAI-compatible API (clients use base_url=".../v1" and add no trailing slash).
    re_path(r"^v1/models/?$", openai_api.models, name="v1_models"),
    re_path(r"^v1/models/(?P<model_id>.+)$", openai_api.models, name="v1_model"),
    re_path(r"^v1/chat/completions/?$", openai_api.chat_completions, name="v1_chat_completions"),
    re_path(r"^v1/embeddings/?$", openai_api.embeddings, name="v1_embeddings"),
    path("", include("evals.urls")),
]

handler400 = "studio.views.bad_request"
handler403 = "studio.views.permission_denied"
handler404 = "studio.views.page_not_found"
handler500 = "studio.views.server_error"
