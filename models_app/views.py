"""Browser pages for models."""
from django.shortcuts import get_object_or_404, render

from labelf_studio.workspaces.permissions import workspace_role_required

from .models import ClassificationModel


@workspace_role_required("annotator")
def model_list(request):
    models = ClassificationModel.objects.filter(workspace=request.current_workspace)
    return render(request, "models_app/model_list.html", {"models": models})


@workspace_role_required("annotator")
def model_detail(request, model_id: int):
    model = get_object_or_404(ClassificationModel, pk=model_id, workspace=request.current_workspace)
    return render(request, "models_app/model_detail.html", {"model": model})


@workspace_role_required("lead")
def model_create(request):
    return render(request, "models_app/model_create.html", {})
