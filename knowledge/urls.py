from django.urls import path

from . import api, views

app_name = "knowledge"
urlpatterns = [
    path("", views.knowledge_base_list, name="list"),
    path("<id:knowledge_base_id>/", views.knowledge_base_detail, name="detail"),
    path("<id:knowledge_base_id>/documents/", views.documents, name="documents"),
    path("<id:knowledge_base_id>/documents/upload/", views.documents_upload, name="upload"),
    path("<id:knowledge_base_id>/documents/uploaded/", views.upload_progress, name="upload_progress"),
    path("<id:knowledge_base_id>/documents/<id:document_id>/", views.document_detail, name="document"),
    path("<id:knowledge_base_id>/documents/<id:document_id>/delete/", views.document_delete, name="document_delete"),
    path("<id:knowledge_base_id>/search/", views.search, name="search"),
    path("<id:knowledge_base_id>/ranking/", views.ranking, name="ranking"),
    path("<id:knowledge_base_id>/rebuild/", views.rebuild, name="rebuild"),
    path("<id:knowledge_base_id>/rebuild/cancel/", views.rebuild_cancel, name="rebuild_cancel"),
    path("<id:knowledge_base_id>/retrieval-tests/", views.retrieval_test_list, name="retrieval_tests"),
    path(
        "<id:knowledge_base_id>/retrieval-tests/from-cases/",
        views.retrieval_test_from_cases,
        name="retrieval_test_from_cases",
    ),
    path("<id:knowledge_base_id>/retrieval-tests/<id:test_id>/", views.retrieval_test, name="retrieval_test"),
    path(
        "<id:knowledge_base_id>/retrieval-tests/<id:test_id>/measure/",
        views.retrieval_test_measure,
        name="retrieval_test_measure",
    ),
    path(
        "<id:knowledge_base_id>/retrieval-tests/<id:test_id>/delete/",
        views.retrieval_test_delete,
        name="retrieval_test_delete",
    ),
    path("<id:knowledge_base_id>/retrieval-tests/<id:test_id>/tune/", views.sweep_new, name="sweep_new"),
    path("<id:knowledge_base_id>/sweeps/<id:sweep_id>/", views.sweep_page, name="sweep"),
    path("<id:knowledge_base_id>/sweeps/<id:sweep_id>/cancel/", views.sweep_cancel, name="sweep_cancel"),
    path("<id:knowledge_base_id>/sweeps/<id:sweep_id>/apply/", views.sweep_apply, name="sweep_apply"),
]

api_urlpatterns = [
    path("knowledge/", api.knowledge_bases, name="api_knowledge_bases"),
    path("knowledge/<id:knowledge_base_id>/documents/", api.documents, name="api_knowledge_documents"),
    path(
        "knowledge/<id:knowledge_base_id>/documents/<id:document_id>/",
        api.document_detail,
        name="api_knowledge_document",
    ),
    path(
        "knowledge/<id:knowledge_base_id>/documents/<id:document_id>/cancel/",
        api.document_cancel,
        name="api_knowledge_document_cancel",
    ),
    path("knowledge/<id:knowledge_base_id>/search/", api.search, name="api_knowledge_search"),
    path("knowledge/<id:knowledge_base_id>/ranking/", api.ranking, name="api_knowledge_ranking"),
    path("knowledge/<id:knowledge_base_id>/rebuild/", api.rebuild, name="api_knowledge_rebuild"),
    path("knowledge/<id:knowledge_base_id>/rebuild/cancel/", api.rebuild_cancel, name="api_knowledge_rebuild_cancel"),
    path(
        "knowledge/<id:knowledge_base_id>/retrieval-tests/",
        api.retrieval_test_list,
        name="api_knowledge_retrieval_tests",
    ),
    path(
        "knowledge/<id:knowledge_base_id>/retrieval-tests/<id:test_id>/",
        api.retrieval_test_detail,
        name="api_knowledge_retrieval_test",
    ),
    path(
        "knowledge/<id:knowledge_base_id>/retrieval-tests/<id:test_id>/measure/",
        api.retrieval_test_measure,
        name="api_knowledge_retrieval_test_measure",
    ),
    path("knowledge/<id:knowledge_base_id>/sweeps/", api.sweep_list, name="api_knowledge_sweeps"),
    path("knowledge/<id:knowledge_base_id>/sweeps/<id:sweep_id>/", api.sweep_detail, name="api_knowledge_sweep"),
    path(
        "knowledge/<id:knowledge_base_id>/sweeps/<id:sweep_id>/cancel/",
        api.sweep_cancel,
        name="api_knowledge_sweep_cancel",
    ),
    path(
        "knowledge/<id:knowledge_base_id>/sweeps/<id:sweep_id>/apply/",
        api.sweep_apply,
        name="api_knowledge_sweep_apply",
    ),
]
