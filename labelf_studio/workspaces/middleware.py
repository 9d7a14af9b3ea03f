"""Puts the browser session's current workspace and the user's role in it on the request."""
from .models import Membership


class CurrentWorkspaceMiddleware:
    SESSION_KEY = "workspace_id"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.membership = None
        if getattr(request, "user", None) is not None and request.user.is_authenticated and not request.path.startswith("/v2/"):
            memberships = Membership.objects.filter(user=request.user).select_related("workspace")
            wanted = request.session.get(self.SESSION_KEY)
            chosen = None
            if wanted is not None:
                chosen = memberships.filter(workspace_id=wanted).first()
            if chosen is None:
                chosen = memberships.order_by("workspace__name").first()
                if chosen is not None:
                    request.session[self.SESSION_KEY] = chosen.workspace_id
            request.membership = chosen
        request.current_workspace = request.membership.workspace if request.membership else None
        return self.get_response(request)
