"""Browser pages for datasets and records."""
from django.shortcuts import get_object_or_404, render

from labelf_studio.workspaces.permissions import workspace_role_required

from .models import Dataset


@workspace_role_required("annotator")
def dataset_list(request):
    datasets = Dataset.objects.filter(workspace=request.current_workspace)
    return render(request, "labeling/dataset_list.html", {"datasets": datasets})


@workspace_role_required("annotator")
def dataset_detail(request, dataset_id: int):
    dataset = get_object_or_404(Dataset, pk=dataset_id, workspace=request.current_workspace)
    return render(request, "labeling/dataset_detail.html", {"dataset": dataset})
