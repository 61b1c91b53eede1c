"""Secrets from .env: loaded on demand, never printed, scrubbed from anything we write.

.env holds tokens only (HF_TOKEN, WANDB_API_KEY, AWS_*, cloud API keys). Values
are read with python-dotenv without touching os.environ, handed to SkyPilot
through `secrets_overrides`, and every log line / record / report we write goes
through `redact()`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

SECRET_NAMES = (
    "HF_TOKEN",
    "WANDB_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "RUNPOD_API_KEY",
    "VAST_API_KEY",
    "LAMBDA_API_KEY",
)
MASK = "****"
# Files that must never be synced to a machine or uploaded to the store.
SYNC_EXCLUDES = (".env", ".env.*", "*.pem", "*credentials*", ".git", "__pycache__", "*.pyc")


def load_secrets(root: Path) -> dict[str, str]:
    """Values from ROOT/.env, then the process environment for names .env lacks."""
    from dotenv import dotenv_values

    found: dict[str, str] = {}
    env_file = root / ".env"
    if env_file.is_file():
        check_env_file(env_file)
        found.update({k: v for k, v in dotenv_values(env_file).items() if v})
    for name in SECRET_NAMES:
        if name not in found and os.environ.get(name):
            found[name] = os.environ[name]
    return found


def check_env_file(env_file: Path) -> None:
    """Every line of .env is NAME=value, a comment or blank: python-dotenv skips the others with a log
    line nobody sees, and the secret on it goes missing. Named by line number only (it may hold a secret)."""
    from dotenv.parser import parse_stream

    from amigo_burst.errors import UserError

    try:
        text = env_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{env_file}: not UTF-8 text") from None
    except OSError as e:
        raise UserError(f"{env_file}: cannot read it ({e.strerror or e})") from None
    bad = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
    if bad:
        lines = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise UserError(f"{env_file}: line{'s' if len(bad) > 1 else ''} {lines} not NAME=value (quotes unclosed? "
                        "a space in the name?): fix or remove, then run the command again")


def redact(text: str, secrets: dict[str, str]) -> str:
    """Replace every secret value (4+ chars, to avoid masking noise) with ****."""
    for value in sorted(secrets.values(), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, MASK)
    return text


def mask(value: str | None) -> str:
    return MASK if value else "(not set)"
