from django.urls import path

from . import evaluation_views

urlpatterns = [
    path("models/<int:model_id>/evaluation/", evaluation_views.model_evaluation, name="model_evaluation"),
    path("models/<int:model_id>/evaluation/cell/", evaluation_views.model_evaluation_cell, name="model_evaluation_cell"),
    path("models/<int:model_id>/evaluation/threshold/", evaluation_views.model_threshold_save, name="model_threshold_save"),
    path("models/<int:model_id>/compare/", evaluation_views.model_compare, name="model_compare"),
]
