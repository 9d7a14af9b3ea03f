from django.urls import path

from . import label_issue_views, views

urlpatterns = [
    path("models/", views.model_list, name="model_list"),
    path("models/new/", views.model_create, name="model_create"),
    path("models/<int:model_id>/", views.model_detail, name="model_detail"),
    path("models/<int:model_id>/predictions/", views.model_predictions, name="model_predictions"),
    path("models/<int:model_id>/try/", views.model_try, name="model_try"),
    path("models/<int:model_id>/deploy/", views.model_deploy, name="model_deploy"),
    path("models/<int:model_id>/archive/", views.model_archive, name="model_archive"),
    path("models/<int:model_id>/settings/", views.model_settings, name="model_settings"),
    path("models/<int:model_id>/labels/", views.model_labels, name="model_labels"),
    path("models/<int:model_id>/label-issues/", label_issue_views.label_issues_page, name="label_issues_page"),
    path("models/<int:model_id>/label-issues/scan/", label_issue_views.label_issues_scan, name="label_issues_scan"),
    path("models/<int:model_id>/label-issues/progress/", label_issue_views.label_issues_progress, name="label_issues_progress"),
    path("models/<int:model_id>/label-issues/<int:issue_id>/resolve/", label_issue_views.label_issue_resolve,
         name="label_issue_resolve"),
]
