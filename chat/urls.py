from django.urls import path

from . import views

app_name = "chat"
urlpatterns = [
    path("", views.conversation_list, name="list"),
    path("new/", views.conversation_new, name="new"),
    path("model-status/", views.model_status, name="model_status"),
    path("<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("<int:conversation_id>/rename/", views.conversation_rename, name="rename"),
    path("<int:conversation_id>/system-prompt/", views.conversation_system_prompt, name="system_prompt"),
    path("<int:conversation_id>/delete/", views.conversation_delete, name="delete"),
    path("<int:conversation_id>/messages/<int:message_id>/", views.message_detail, name="message"),
]
