from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("", views.dashboard, name="dashboard"),
    path("workspace/switch/", views.switch_workspace, name="switch_workspace"),
    path("workspace/members/", views.members, name="members"),
    path("workspace/members/<int:membership_id>/", views.member_update, name="member_update"),
    path("workspace/api-keys/", views.api_keys, name="api_keys"),
    path("workspace/api-keys/<int:key_id>/revoke/", views.api_key_revoke, name="api_key_revoke"),
    path("workspace/usage/", views.usage, name="usage"),
    path("workspace/audit/", views.audit_log, name="audit_log"),
]
