from django.urls import path

from . import api, views

app_name = "optimiser"
urlpatterns = [
    path("new/", views.optimisation_new, name="new"),
    path("<id:optimisation_id>/", views.optimisation_detail, name="optimisation"),
    path("<id:optimisation_id>/progress/", views.optimisation_progress, name="progress"),
    path("<id:optimisation_id>/cancel/", views.optimisation_cancel, name="cancel"),
    path("<id:optimisation_id>/save/", views.optimisation_save, name="save"),
    path("<id:optimisation_id>/evaluate/", views.evaluate_held_out, name="evaluate"),
]

api_urlpatterns = [
    path("prompts/<slug:slug>/optimise/", api.optimise, name="api_optimise"),
    path("optimisations/<id:optimisation_id>/", api.optimisation_detail, name="api_optimisation"),
    path("optimisations/<id:optimisation_id>/save/", api.optimisation_save, name="api_optimisation_save"),
    path("optimisations/<id:optimisation_id>/cancel/", api.optimisation_cancel, name="api_optimisation_cancel"),
]
