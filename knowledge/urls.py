from django.urls import path

from . import api

app_name = "knowledge"
urlpatterns = []

api_urlpatterns = [
    path("knowledge/", api.knowledge_bases, name="api_knowledge_bases"),
    path("knowledge/<id:knowledge_base_id>/documents/", api.documents, name="api_knowledge_documents"),
    path("knowledge/<id:knowledge_base_id>/documents/<id:document_id>/", api.document_detail,
         name="api_knowledge_document"),
    path("knowledge/<id:knowledge_base_id>/documents/<id:document_id>/cancel/", api.document_cancel,
         name="api_knowledge_document_cancel"),
    path("knowledge/<id:knowledge_base_id>/search/", api.search, name="api_knowledge_search"),
]
