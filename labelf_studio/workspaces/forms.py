from django import forms

from .models import Role


class MemberInviteForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]{2,150}$", max_length=150,
                                error_messages={"invalid": "Use 2-150 letters, digits and @/./+/-/_ only."})
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=Role.choices)
    password = forms.CharField(required=False, min_length=8, widget=forms.PasswordInput,
                               help_text="For a new user; leave empty to generate one.")


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=Role.choices)
