"""Browser-side access: a view names the role it needs; missing membership or role is a 403 page."""
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from .models import role_at_least


def workspace_role_required(role: str = "annotator"):
    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            membership = getattr(request, "membership", None)
            if membership is None or not role_at_least(membership.role, role):
                raise PermissionDenied(f"This page needs the {role} role in the current workspace.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
