"""docker-compose.yml against the settings module, and Django's deploy checks on production settings."""
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def settings_environment_names() -> set[str]:
    names = set()
    for path in (ROOT / "labelf_studio" / "settings").glob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r'environ(?:\.get)?\(\s*"([A-Z_]+)"', text))
        names |= set(re.findall(r'env_(?:bool|int)\(\s*"([A-Z_]+)"', text))
        names |= set(re.findall(r'environ\["([A-Z_]+)"\]', text))
    return names


def test_compose_services_commands_and_environment():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "beat"} <= set(services)
    assert "gunicorn" in " ".join(services["web"]["command"])
    assert services["worker"]["command"][:4] == ["celery", "-A", "labelf_studio", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "labelf_studio", "beat"]
    known = settings_environment_names()
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        for required in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE"):
            assert required in environment, (name, required)
        unknown = {key for key in environment if key not in known and key != "DJANGO_SETTINGS_MODULE"}
        assert not unknown, f"{name} sets variables the settings never read: {unknown}"
        assert environment["DJANGO_SETTINGS_MODULE"] == "labelf_studio.settings.production"
        assert environment["DATABASE_URL"].startswith("postgres://") and environment["REDIS_URL"].startswith("redis://")


def test_production_settings_pass_the_deploy_checks():
    # A clean environment: only what production would set (other tests may have changed os.environ).
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "HF_HUB_OFFLINE": "1",
           "DJANGO_SETTINGS_MODULE": "labelf_studio.settings.production",
           "SECRET_KEY": "a-long-random-production-secret-key-for-the-check-0123456789abcdef",
           "ALLOWED_HOSTS": "studio.example.com"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
