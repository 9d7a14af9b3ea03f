from .models import role_at_least
from .selectors import workspaces_for_user


def workspace(request):
    membership = getattr(request, "membership", None)
    user = getattr(request, "user", None)
    role = membership.role if membership else None
    return {
        "current_workspace": getattr(request, "current_workspace", None),
        "current_role": role,
        "is_lead": bool(role and role_at_least(role, "lead")),
        "is_admin": bool(role and role_at_least(role, "admin")),
        "user_workspaces": workspaces_for_user(user=user) if user is not None and user.is_authenticated else [],
    }
