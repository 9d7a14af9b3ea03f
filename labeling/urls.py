from django.urls import path

from . import duplicates_views, views

urlpatterns = [
    path("datasets/", views.dataset_list, name="dataset_list"),
    path("datasets/upload/", views.dataset_upload, name="dataset_upload"),
    path("datasets/<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path("datasets/<int:dataset_id>/progress/", views.dataset_progress, name="dataset_progress"),
    path("datasets/<int:dataset_id>/export/", views.dataset_export, name="dataset_export"),
    path("datasets/<int:dataset_id>/delete/", views.dataset_delete, name="dataset_delete"),
    path("datasets/<int:dataset_id>/duplicates/", duplicates_views.dataset_duplicates, name="dataset_duplicates"),
    path("datasets/<int:dataset_id>/duplicates/progress/", duplicates_views.dataset_duplicates_progress,
         name="dataset_duplicates_progress"),
    path("datasets/<int:dataset_id>/duplicates/scan/", duplicates_views.dataset_duplicates_scan,
         name="dataset_duplicates_scan"),
    path("datasets/<int:dataset_id>/duplicates/exclude/", duplicates_views.dataset_duplicates_exclude,
         name="dataset_duplicates_exclude"),
    path("datasets/<int:dataset_id>/duplicates/label/", duplicates_views.dataset_duplicates_label,
         name="dataset_duplicates_label"),
]
