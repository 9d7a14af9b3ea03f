"""Several concurrent clients on the embedded default (database counters) never exceed the plan."""
import pytest

from tests.factories import make_key, make_workspace
from tests.platform.ratelimit_load import check_admissions, hammer


@pytest.mark.django_db(transaction=True)
def test_concurrent_clients_never_get_more_than_the_allowance(settings):
    settings.LABELF = {**settings.LABELF, "RATE_LIMIT_BACKEND": "database"}
    workspace = make_workspace(rate_limit=30)  # burst: 10 per 10 s
    secret = make_key(workspace, "admin")
    outcome = hammer(secret, threads=8, requests_each=8)
    admitted = check_admissions(outcome["results"], limit=30)
    assert admitted >= 10  # the allowance is really used, not just refused
