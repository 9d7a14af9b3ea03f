from django.contrib import admin
from django.urls import include, path

from labelf_studio.api import api
from labelf_studio import api_routes  # noqa: F401  (registers every /v2 router on `api`)

handler403 = "labelf_studio.views.permission_denied"
handler404 = "labelf_studio.views.page_not_found"

urlpatterns = [
    path("v2/", api.urls),
    path("django-admin/", admin.site.urls),
    path("", include("labelf_studio.workspaces.urls")),
    path("", include("labeling.urls")),
    path("", include("labeling.queue_urls")),
    path("", include("models_app.urls")),
    path("", include("models_app.evaluation_urls")),
]
