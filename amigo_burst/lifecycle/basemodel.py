"""The base model, checked before anything is recorded or rented: `config check`, `plan`, `launch`,
`pipeline` (and `rehearse --model`) ask here first.

    check_base(cfg)            -> BaseInfo: where it is, its architecture and size; UserError otherwise
    check_model_folder(path)   the folder checks alone (rehearse --model)

A local folder (amigo.toml's `base`, relative to the project): config.json a JSON object naming its
model_type, and a tokenizer whose JSON files parse. A hub id: its config.json in the Hugging Face
cache, or fetched from the hub (HF_ENDPOINT, HF_TOKEN from .env) when the hub answers; neither ->
refused (`plan` only warns: its numbers come from [model].arch). The size is config.json's shapes
through the estimator's own arithmetic (planning/hardware.py), so "12.2B params" is what the plan uses.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from amigo_burst.config import AmigoConfig
from amigo_burst.errors import UserError, one_line

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class HubUnreachable(UserError):
    """A hub id neither cached nor checkable now (no network): `plan` warns, a launch refuses."""


@dataclass(frozen=True)
class BaseInfo:
    base: str  # as amigo.toml says it
    where: str  # folder | cache | hub
    location: str  # the folder, or the hub id
    model_type: str
    params: int | None  # None: config.json's shapes are not a decoder's the estimator reads

    def line(self) -> str:
        from amigo_burst.planning.units import fmt_params

        here = "" if self.location == self.base else f" {self.location}"
        where = {"folder": f"local folder{here}", "cache": "hub id, in the Hugging Face cache",
                 "hub": "hub id, on the hub (reachable)"}[self.where]
        size = f", {fmt_params(self.params)} params" if self.params else ""
        return f"base model {self.base}: {where} ({self.model_type}{size})"


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what}: {path.name} is not valid JSON ({e.__class__.__name__}: truncated or "
                        "not a transformers file?)") from None
    except OSError as e:
        raise UserError(f"{what}: cannot read {path.name} ({e.strerror or e})") from None


def _from_config(doc: object, what: str, source: str) -> tuple[str, int | None]:
    """(model_type, params) of a config.json's content."""
    from amigo_burst.planning.hardware import arch_from_config

    if not isinstance(doc, dict) or not (doc.get("model_type") or doc.get("architectures")):
        raise UserError(f"{what}: config.json names no model_type: not a transformers model config")
    try:
        params = arch_from_config(doc, source, source).params
    except UserError:
        params = None  # an encoder or an odd shape: still a model, its size unknown to the estimator
    return str(doc.get("model_type") or doc["architectures"][0]), params


def check_model_folder(folder: Path, what: str) -> tuple[str, int | None]:
    """A model folder as training loads it: (model_type, params); UserError naming what is wrong."""
    if not folder.exists():
        raise UserError(f"{what}: folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{what}: {folder} is a file, not a model folder")
    if not (folder / "config.json").is_file():
        raise UserError(f"{what}: {folder} has no config.json: not a transformers model folder")
    found = _from_config(_read_json(folder / "config.json", what), what, str(folder / "config.json"))
    tokenizer = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if not tokenizer:
        raise UserError(f"{what}: {folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    for name in tokenizer:
        if name.endswith(".json"):
            _read_json(folder / name, what)
        elif not os.access(folder / name, os.R_OK):
            raise UserError(f"{what}: cannot read {name}")
    return found


def looks_like_path(base: str) -> bool:
    return base.startswith(("/", ".", "~")) or not HUB_ID.match(base)


def check_base(cfg: AmigoConfig, *, network: bool = True, timeout_s: float = 3.0) -> BaseInfo:
    """The configured base model, found and readable (see the module's docstring)."""
    base = cfg.model.base
    folder = cfg.resolve(base)
    what = f'[model] base = "{base}"'
    if folder.exists() or looks_like_path(base):
        model_type, params = check_model_folder(folder, what)
        return BaseInfo(base, "folder", str(folder), model_type, params)
    cached = _cached_config(base)
    if cached is not None:
        model_type, params = _from_config(_read_json(cached, what), what, base)
        return BaseInfo(base, "cache", base, model_type, params)
    if not network or not hub_reachable(timeout_s):
        raise HubUnreachable(f"{what}: no folder {folder}, and not in the Hugging Face cache while the hub is "
                        "unreachable from here: connect, or point base at a local model folder")
    model_type, params = _from_config(_read_json(_fetch_config(cfg, base, what), what), what, base)
    return BaseInfo(base, "hub", base, model_type, params)


def _cached_config(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no hub library here: nothing is cached either
        return None
    try:  # the cache the environment names now (the library reads HF_HUB_CACHE once, at import)
        found = try_to_load_from_cache(repo, "config.json", cache_dir=hub_cache())
    except Exception:  # noqa: BLE001 - an id the library refuses: not cached
        return None
    return Path(found) if isinstance(found, str) else None


def hub_cache() -> str | None:
    """HF_HUB_CACHE, else HF_HOME/hub; None: the library's default (~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None


def _fetch_config(cfg: AmigoConfig, repo: str, what: str) -> Path:
    """config.json from the hub (into the cache): the model exists and this token may read it."""
    from amigo_burst.secrets import load_secrets

    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError
    except ImportError:
        raise UserError(f"{what}: checking a hub model needs huggingface_hub: pip install 'amigo-burst[train]'") \
            from None
    token = load_secrets(cfg.root).get("HF_TOKEN")
    try:
        return Path(hf_hub_download(repo, "config.json", token=token or None, etag_timeout=10, cache_dir=hub_cache()))
    except GatedRepoError:
        raise UserError(f"{what}: a gated model: accept its terms on its hub page, and put HF_TOKEN in .env") \
            from None
    except RepositoryNotFoundError:
        raise UserError(f"{what}: no such model on the hub (a private one needs HF_TOKEN in .env)") from None
    except EntryNotFoundError:
        raise UserError(f"{what}: the hub repository has no config.json: not a transformers model") from None
    except Exception as e:  # noqa: BLE001 - network, proxy, a hub error page
        raise UserError(f"{what}: cannot read its config.json from the hub: {one_line(e, 200)}") from None


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Does the hub the libraries ask (HF_ENDPOINT, else huggingface.co) accept a connection? HF_HUB_OFFLINE
    set by the user means no. DNS has no timeout of its own: the probe runs in a thread we stop waiting for."""
    import socket
    import threading
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    reachable = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            reachable.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(reachable)
