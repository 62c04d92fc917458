from django.urls import path

from . import api, views

app_name = "online"
urlpatterns = [
    path("", views.rules, name="rules"),
    path("<id:rule_id>/", views.rule_detail, name="rule"),
    path("<id:rule_id>/replies/", views.rule_replies, name="replies"),
    path("<id:rule_id>/disable/", views.rule_disable, name="disable"),
    path("<id:rule_id>/delete/", views.rule_delete, name="delete"),
]

api_urlpatterns = [
    path("online-evaluations/", api.rules, name="api_online_rules"),
    path("online-evaluations/<id:rule_id>/", api.rule_detail, name="api_online_rule"),
    path("online-evaluations/<id:rule_id>/disable/", api.rule_disable, name="api_online_rule_disable"),
]
