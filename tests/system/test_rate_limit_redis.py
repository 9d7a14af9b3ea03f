"""Production rate limiting: atomic Redis counters shared by every client."""
import pytest
from django.conf import settings as django_settings

from tests.factories import make_key, make_workspace
from tests.platform.ratelimit_load import check_admissions, hammer


@pytest.mark.django_db(transaction=True)
def test_concurrent_clients_on_redis_never_get_more_than_the_allowance(settings):
    assert django_settings.REDIS_URL
    settings.LABELF = {**settings.LABELF, "RATE_LIMIT_BACKEND": "redis"}
    workspace = make_workspace(rate_limit=60)  # burst: 20 per 10 s
    secret = make_key(workspace, "admin")
    outcome = hammer(secret, threads=8, requests_each=10)
    admitted = check_admissions(outcome["results"], limit=60)
    assert admitted >= 20
    remaining = [int(r[3]["X-RateLimit-Remaining"]) for r in sorted(outcome["results"], key=lambda r: r[1]) if r[2] == 200]
    assert min(remaining) >= 0
