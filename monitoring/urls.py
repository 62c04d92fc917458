from django.urls import path

from . import api, views

app_name = "monitoring"
urlpatterns = [
    path("prompts/<slug:slug>/", views.prompt_monitoring, name="prompt"),
]

api_urlpatterns = [
    path("prompts/<slug:slug>/metrics/", api.prompt_metrics, name="api_prompt_metrics"),
]
