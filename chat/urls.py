from django.urls import path

from . import playground, views

app_name = "chat"
urlpatterns = [
    path("", views.conversation_list, name="list"),
    path("new/", views.conversation_new, name="new"),
    path("conversations/", views.conversation_list_page, name="list_page"),
    path("model-status/", views.model_status, name="model_status"),
    path("search/", views.conversation_search, name="search"),
    path("<id:conversation_id>/", views.conversation_detail, name="conversation"),
    path("<id:conversation_id>/rename/", views.conversation_rename, name="rename"),
    path("<id:conversation_id>/system-prompt/", views.conversation_system_prompt, name="system_prompt"),
    path("<id:conversation_id>/delete/", views.conversation_delete, name="delete"),
    path("<id:conversation_id>/pin/", views.conversation_pin, name="pin"),
    path("<id:conversation_id>/archive/", views.conversation_archive, name="archive"),
    path("<id:conversation_id>/model/", views.conversation_model, name="model"),
    path("<id:conversation_id>/messages/<id:message_id>/", views.message_detail, name="message"),
    path("<id:conversation_id>/history/", views.conversation_history, name="history"),
    path("<id:conversation_id>/sampling/", views.conversation_sampling, name="sampling"),
    path("<id:conversation_id>/messages/<id:message_id>/feedback/", views.message_feedback, name="feedback"),
    path("<id:conversation_id>/knowledge/", views.conversation_knowledge, name="knowledge"),
    path("<id:conversation_id>/knowledge/attach/", views.conversation_knowledge_attach, name="knowledge_attach"),
    path("<id:conversation_id>/knowledge/detach/", views.conversation_knowledge_detach, name="knowledge_detach"),
    path("<id:conversation_id>/knowledge/suggest/", views.conversation_knowledge_suggest, name="knowledge_suggest"),
    path("defaults/", views.chat_defaults, name="defaults"),
    path("<id:conversation_id>/export/", views.conversation_export, name="export"),
    path("import/", views.conversation_import, name="import_conversations"),
]

# Pages of the prompt library that run chats (studio/urls.py routes them under /prompts/).
playground_urlpatterns = [
    path("<slug:slug>/playground/", playground.playground, name="page"),
    path("<slug:slug>/playground/preview/", playground.playground_preview, name="preview"),
    path("<slug:slug>/playground/run/", playground.playground_run, name="run"),
    path("<slug:slug>/playground/runs/", playground.playground_run_list, name="runs"),
    path("<slug:slug>/playground/runs/<id:conversation_id>/", playground.playground_run_detail, name="run_detail"),
    path(
        "<slug:slug>/playground/runs/<id:conversation_id>/tool-results/",
        playground.playground_tool_results,
        name="tool_results",
    ),
    path("<slug:slug>/playground/compare/", playground.playground_compare, name="compare"),
    path("<slug:slug>/versions/<int:number>/chat/", playground.chat_start, name="chat_start"),
]
