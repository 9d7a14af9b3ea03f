"""Protections checked by removal: each mutation deletes one key protection from a copy of the project
and runs the test that guards it, which must then FAIL. A protection whose removal no test notices is
a protection nobody checks.

    .venv/bin/python tests/security/mutations.py                 # all of them (about a minute)
    .venv/bin/python tests/security/mutations.py lease-claim     # one, by name

`tests/security/test_mutations.py` runs them in `make test`. A mutation whose code no longer matches
(the protection was refactored) fails loudly: update its text here, never delete it silently.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_COPIED = shutil.ignore_patterns(".venv", "var", ".git", "bench", "__pycache__", ".pytest_cache", "*.egg-info",
                                    "node_modules", "test-results")


@dataclass(frozen=True)
class Mutation:
    name: str
    protection: str
    edits: tuple[tuple[str, str, str], ...]  # (file, exact text, what it becomes); each text occurs exactly once
    test: str  # the pytest node id that must fail without the protection
    system: bool = False  # its test needs PostgreSQL and Redis (the environment of `make test`'s system pass)


MUTATIONS = (
    Mutation(
        "tenant-check", "a model is looked up inside the caller's workspace only",
        (("models_app/selectors.py", "    return models_for_workspace(workspace=workspace).filter(pk=model_id).first()",
          "    return ClassificationModel.objects.filter(pk=model_id).first()"),),
        "tests/security/test_tenant_isolation.py::test_every_api_operation_answers_foreign_ids_like_missing_ones"),
    Mutation(
        "lease-claim", "a draw claims only rows nobody else holds a live lease on",
        (("labeling/queue.py", "    claimable = _free(now)\n", "    claimable = Q(pk__isnull=False)\n"),),
        "tests/labeling/test_queue_leases.py::test_two_annotators_never_get_the_same_record"),
    Mutation(
        "idempotent-label", "the same label for the same record by the same annotator again writes nothing",
        (("labeling/queue.py", "                continue  # a repeated submission: idempotent", "                pass"),),
        "tests/labeling/test_queue_api.py::test_double_submission_is_idempotent"),
    Mutation(
        # The row lock matters where reads do not block writers (PostgreSQL): run on the system services.
        "rate-limit-lock", "the database rate-limit counters are locked from the read to the increment",
        (("labelf_studio/ratelimit.py", "RateLimitCounter.objects.select_for_update().get_or_create(",
          "RateLimitCounter.objects.get_or_create("),
         ("labelf_studio/ratelimit.py", "counter = RateLimitCounter.objects.select_for_update().get(",
          "counter = RateLimitCounter.objects.get(")),
        "tests/system/test_rate_limit_atomicity.py::test_overlapping_checks_on_database_counters_admit_exactly_the_allowance",
        system=True),
    Mutation(
        # Checked twice (the request's length, then the stored file's size): both go.
        "upload-size-limit", "an upload over MAX_UPLOAD_BYTES answers 413 before anything is stored",
        (("labelf_studio/api.py", "        if length > limit:\n            raise ApiError(413,",
          "        if False:\n            raise ApiError(413,"),
         ("labeling/services.py", "    if uploaded_file.size > limit:", "    if False:")),
        "tests/labeling/test_dataset_import.py::test_upload_over_the_size_limit_is_413"),
)


@dataclass
class Outcome:
    mutation: Mutation
    returncode: int
    seconds: float
    output: str

    @property
    def caught(self) -> bool:
        # pytest's exit code 1: tests ran and some failed. 2-5 (interrupted, internal error, usage, no
        # tests collected) mean the mutant did not even run its test, which proves nothing.
        return self.returncode == 1 and " failed" in self.output


class MutationDrift(Exception):
    """The protection's code changed: the mutation must be updated."""


def _apply(root: Path, edits) -> None:
    for path, old, new in edits:
        target = root / path
        text = target.read_text()
        if text.count(old) != 1:
            raise MutationDrift(f"{path}: expected the text below exactly once, found it {text.count(old)} times:\n{old}")
        target.write_text(text.replace(old, new))


def _test_env(var_dir: Path, *, system: bool) -> dict:
    services = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER"}
    dropped = {"PYTEST_ADDOPTS", "DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST"} | (set() if system else services)
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    if system and env.get("DATABASE_URL"):
        # Its own test database: the run that started this one may have `test_<name>` open.
        env["DATABASE_URL"] = env["DATABASE_URL"].split("?")[0] + "_mutant"
    # The embedder's ONNX export is reused from the real var folder instead of being built again.
    model_cache = os.environ.get("LABELF_MODEL_CACHE") or str(Path(os.environ.get("LABELF_VAR_DIR", ROOT / "var")) / "models")
    # Shared data sits beside the real checkout, not beside the copy.
    env.setdefault("BANKING77_DIR", str(ROOT.parent / "shared" / "data" / "banking77"))
    env.update({"LABELF_VAR_DIR": str(var_dir), "LABELF_MODEL_CACHE": model_cache, "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "DJANGO_ALLOW_ASYNC_UNSAFE": "true", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def run(mutation: Mutation, *, timeout: float = 300) -> Outcome:
    """Copies the project, removes the protection, runs its test; the outcome says whether the test failed."""
    with tempfile.TemporaryDirectory(prefix=f"labelf-mutant-{mutation.name}-") as tmp:
        copy = Path(tmp) / "project"
        shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
        _apply(copy, mutation.edits)
        # Python puts the working directory first on sys.path, so the copy shadows the editable install.
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", mutation.test, "-x", "-q", "-p", "no:cacheprovider"],
            cwd=copy, env=_test_env(Path(tmp) / "var", system=mutation.system), capture_output=True, text=True,
            timeout=timeout)
        return Outcome(mutation, completed.returncode, time.monotonic() - started, completed.stdout + completed.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all; the system one needs "
                                                  "DATABASE_URL, REDIS_URL as scripts/test.sh sets them)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"no such mutation: {', '.join(sorted(unknown))}")
    survived = 0
    for mutation in chosen:
        outcome = run(mutation)
        verdict = "caught" if outcome.caught else "NOT CAUGHT"
        print(f"{mutation.name:20} {verdict:11} {outcome.seconds:5.1f} s  {mutation.test}")
        if not outcome.caught:
            survived += 1
            print(outcome.output[-3000:])
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
