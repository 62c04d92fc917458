from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
    path("settings/tokens/", views.api_token_create, name="token_create"),
    path("settings/tokens/<id:token_id>/revoke/", views.api_token_revoke, name="token_revoke"),
]
