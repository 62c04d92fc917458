from django.urls import path

from . import api, views

app_name = "review"
urlpatterns = [
    path("", views.queue, name="queue"),
    path("items/", views.queue_items, name="items"),
    path("pick/", views.pick, name="pick"),
    path("calibration/", views.calibration, name="calibration"),
    path("<id:item_id>/", views.item_detail, name="item"),
    path("<id:item_id>/review/", views.item_review, name="review"),
    path("<id:item_id>/claim/", views.item_claim, name="claim"),
    path("<id:item_id>/assign/", views.item_assign, name="assign"),
]

api_urlpatterns = [
    path("review-queue/", api.review_queue, name="api_review_queue"),
    path("review-queue/agreement/", api.review_agreement, name="api_review_agreement"),
    path("review-queue/<id:item_id>/", api.review_item, name="api_review_item"),
    path("review-queue/<id:item_id>/claim/", api.review_item_claim, name="api_review_item_claim"),
    path("review-queue/<id:item_id>/assign/", api.review_item_assign, name="api_review_item_assign"),
]
