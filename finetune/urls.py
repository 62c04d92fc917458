from django.urls import path

from . import api, views

app_name = "finetune"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("new/", views.job_new, name="new"),
    path("plan/", views.job_plan, name="plan"),
    path("notice/", views.training_notice, name="notice"),
    path("<id:job_id>/", views.job_detail, name="job"),
    path("<id:job_id>/progress/", views.job_progress, name="progress"),
    path("<id:job_id>/cancel/", views.job_cancel, name="cancel"),
    path("<id:job_id>/training.log", views.job_raw_log, name="raw_log"),
    path("models/<id:model_id>/evaluate/", views.model_evaluate, name="model_evaluate"),
    path("models/<id:model_id>/adapter.zip", views.model_download, name="model_download"),
    path("models/<id:model_id>/merged/", views.model_merged, name="model_merged"),
    path("models/<id:model_id>/delete/", views.model_delete, name="model_delete"),
    path("embedders/new/", views.embedder_new, name="embedder_new"),
    path("embedders/<id:job_id>/", views.embedder_job, name="embedder_job"),
    path("embedders/<id:job_id>/progress/", views.embedder_progress, name="embedder_progress"),
    path("embedders/<id:job_id>/cancel/", views.embedder_cancel, name="embedder_cancel"),
    path("embedders/tuned/<id:tuned_id>/use/", views.tuned_embedder_use, name="tuned_embedder_use"),
    path("embedders/tuned/<id:tuned_id>/delete/", views.tuned_embedder_delete, name="tuned_embedder_delete"),
]

api_urlpatterns = [
    path("fine-tunes/", api.fine_tunes, name="api_fine_tunes"),
    path("fine-tunes/<id:job_id>/", api.fine_tune, name="api_fine_tune"),
    path(
        "knowledge/<id:knowledge_base_id>/embedder-fine-tunes/",
        api.embedder_fine_tunes,
        name="api_embedder_fine_tunes",
    ),
    path("embedder-fine-tunes/<id:job_id>/", api.embedder_fine_tune, name="api_embedder_fine_tune"),
    path(
        "embedder-fine-tunes/<id:job_id>/cancel/", api.embedder_fine_tune_cancel, name="api_embedder_fine_tune_cancel"
    ),
    path("embedder-fine-tunes/<id:job_id>/use/", api.embedder_fine_tune_use, name="api_embedder_fine_tune_use"),
]
