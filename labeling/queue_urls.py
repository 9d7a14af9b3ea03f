from django.urls import path

from . import queue_views, team_views

urlpatterns = [
    path("models/<int:model_id>/label/", queue_views.label_page, name="label_page"),
    path("models/<int:model_id>/label/next/", queue_views.label_next, name="label_next"),
    path("models/<int:model_id>/label/submit/", queue_views.label_submit, name="label_submit"),
    path("models/<int:model_id>/label/skip/", queue_views.label_skip, name="label_skip"),
    path("models/<int:model_id>/label/undo/", queue_views.label_undo, name="label_undo"),
    path("models/<int:model_id>/label/stats/", queue_views.label_stats, name="label_stats"),
    path("models/<int:model_id>/training/", queue_views.training_panel, name="label_training"),
    path("models/<int:model_id>/team/", team_views.team_page, name="team_page"),
    path("models/<int:model_id>/team/overlap/", team_views.team_overlap, name="team_overlap"),
    path("models/<int:model_id>/review/", team_views.review_page, name="review_page"),
    path("models/<int:model_id>/review/next/", team_views.review_next, name="review_next"),
    path("models/<int:model_id>/review/decide/", team_views.review_decide, name="review_decide"),
]
