"""Each key protection, removed from a copy of the project, makes the test that guards it fail
(tests/security/mutations.py says which protections and which tests)."""
import pytest

from tests.security.mutations import MUTATIONS, run


@pytest.mark.slow
@pytest.mark.parametrize("mutation", [pytest.param(m, id=m.name, marks=[pytest.mark.system] if m.system else [])
                                      for m in MUTATIONS])
def test_removing_the_protection_fails_its_test(mutation):
    outcome = run(mutation)
    assert outcome.caught, (f"{mutation.name}: without '{mutation.protection}' {mutation.test} "
                            f"did not fail (pytest exit {outcome.returncode}):\n{outcome.output[-3000:]}")
