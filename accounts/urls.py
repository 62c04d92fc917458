from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("settings/", views.settings_page, name="settings"),
    path("settings/password/", views.password_change, name="password_change"),
    path("settings/people/", views.person_create, name="person_create"),
    path("settings/people/<id:person_id>/staff/", views.person_staff, name="person_staff"),
    path("settings/people/<id:person_id>/password/", views.person_password, name="person_password"),
    path("settings/people/<id:person_id>/active/", views.person_active, name="person_active"),
    path("settings/people/<id:person_id>/remove/", views.person_remove, name="person_remove"),
    path("settings/tokens/", views.api_token_create, name="token_create"),
    path("settings/tokens/<id:token_id>/revoke/", views.api_token_revoke, name="token_revoke"),
]
