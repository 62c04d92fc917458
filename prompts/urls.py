from django.urls import path

from . import api, views

app_name = "prompts"
urlpatterns = [
    path("", views.prompt_list, name="list"),
    path("new/", views.prompt_new, name="new"),
    path("import/", views.prompt_import, name="import"),
    path("<slug:slug>/", views.prompt_detail, name="detail"),
    path("<slug:slug>/versions/new/", views.version_new, name="version_new"),
    path("<slug:slug>/versions/<int:number>/", views.prompt_detail, name="version"),
    path("<slug:slug>/diff/", views.version_diff, name="diff"),
    path("<slug:slug>/history/", views.version_history, name="history"),
    path("<slug:slug>/label-history/", views.label_history, name="label_history"),
    path("<slug:slug>/labels/", views.label_move, name="label_move"),
    path("<slug:slug>/editors/", views.editors_change, name="editors"),
    path("<slug:slug>/split/", views.split_change, name="split"),
    path("<slug:slug>/split/promote/", views.split_promote, name="split_promote"),
    path("<slug:slug>/export/", views.prompt_export, name="export"),
]

api_urlpatterns = [
    path("prompts/<slug:slug>/", api.prompt_version, name="api_prompt"),
    path("prompts/<slug:slug>/render/", api.prompt_render, name="api_prompt_render"),
    path("prompts/<slug:slug>/split/", api.prompt_split, name="api_prompt_split"),
    path("prompts/<slug:slug>/split/promote/", api.prompt_split_promote, name="api_prompt_split_promote"),
]
