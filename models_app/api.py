"""/v2 models, versions, deployment, training and inference."""
from django.http import HttpRequest
from ninja import Router

from labelf_studio.api import ErrorOut, paginate

router = Router(tags=["models"])


@router.get("/models", response={200: dict, 400: ErrorOut, 401: ErrorOut, 429: ErrorOut}, summary="List models")
def models_list(request: HttpRequest):
    from models_app.selectors import models_for_workspace, model_to_dict

    return paginate(request, models_for_workspace(workspace=request.workspace), model_to_dict)
