from django.urls import path

from . import api, views

app_name = "evals"
urlpatterns = [
    path("cases/", views.case_list, name="cases"),
    path("cases/new/", views.case_new, name="case_new"),
    path("cases/bulk/", views.cases_bulk, name="cases_bulk"),
    path("cases/export/", views.cases_export, name="cases_export"),
    path("cases/few-shot/", views.few_shot, name="few_shot"),
    path("cases/import/", views.case_import, name="import"),
    path("cases/import/<id:draft_id>/", views.case_import_map, name="import_map"),
    path("cases/selections/", views.selection_save, name="selection_save"),
    path("cases/selections/<id:selection_id>/delete/", views.selection_delete, name="selection_delete"),
    path("cases/flag/<id:message_id>/", views.case_flag, name="flag"),
    path("cases/prefer/<id:message_id>/", views.case_prefer, name="prefer"),
    path("cases/prompt-summary/<slug:slug>/", views.prompt_summary, name="prompt_summary"),
    path("cases/<id:case_id>/", views.case_detail, name="case"),
    path("cases/<id:case_id>/retrieval/", views.case_retrieval, name="case_retrieval"),
    path("evaluations/", views.evaluation_list, name="evaluations"),
    path("evaluations/new/", views.evaluation_new, name="evaluation_new"),
    path("evaluations/compare/", views.evaluation_compare, name="compare"),
    path("evaluations/<id:evaluation_id>/", views.evaluation_detail, name="evaluation"),
    path("evaluations/<id:evaluation_id>/progress/", views.evaluation_progress, name="evaluation_progress"),
    path("evaluations/<id:evaluation_id>/cancel/", views.evaluation_cancel, name="evaluation_cancel"),
    path("evaluations/<id:evaluation_id>/results/<id:result_id>/verdict/", views.result_verdict, name="verdict"),
]

api_urlpatterns = [
    path("failure-cases/", api.failure_cases, name="api_failure_cases"),
    path("failure-cases/export/", api.failure_cases_export, name="api_failure_cases_export"),
    path("evaluations/", api.evaluations, name="api_evaluations"),
    path("evaluations/<id:evaluation_id>/", api.evaluation_detail, name="api_evaluation"),
    path("evaluations/<id:evaluation_id>/cancel/", api.evaluation_cancel, name="api_evaluation_cancel"),
]
