"""The controller's side of the artifact store: train/storage/ plus rich bars and UserError.

    store = open_from_config(cfg)          # [store] url/endpoint_url from amigo.toml, creds from .env
    store.put_dir(".amigo/work/RUN/inputs", "runs/RUN/inputs")
    store.get_dir("runs/RUN/outputs", ".amigo/runs/RUN")

Every StoreError becomes a one-line UserError; transfers over 1 MB draw a transient
progress bar on stderr (only when stderr is a terminal).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from amigo_burst.errors import UserError
from amigo_burst.secrets import load_secrets
from train.storage import Store, StoreError, Transfer, open_store

if TYPE_CHECKING:
    from amigo_burst.config import AmigoConfig

BAR_MIN_BYTES = 1_000_000  # smaller transfers finish before a bar is worth drawing


def store_uri(cfg: AmigoConfig) -> str:
    """cfg.store.url with a relative file:// path made absolute against the project root."""
    url = cfg.store.url
    if url.startswith("file://"):
        return "file://" + cfg.resolve(url[len("file://"):]).as_posix()
    return url


def open_from_config(cfg: AmigoConfig, *, bars: bool = True) -> ControllerStore:
    """The project's store. s3 credentials: .env's AWS_* (else the environment / ~/.aws)."""
    uri = store_uri(cfg)
    creds = None
    if uri.startswith("s3://"):
        creds = {k: v for k, v in load_secrets(cfg.root).items() if k.startswith("AWS_")} or None
    with _user_errors():
        return ControllerStore(open_store(uri, cfg.store.endpoint_url, credentials=creds), bars=bars)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except StoreError as e:
        raise UserError(f"store: {e}") from None


class _Bar:
    """progress(delta, total) -> a rich bar, created on the first call if total > BAR_MIN_BYTES."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.progress, self.task = label, enabled, None, None

    def __call__(self, delta: int, total: int) -> None:
        if self.progress is None and self.enabled and total > BAR_MIN_BYTES:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            console = Console(stderr=True)
            if not console.is_terminal:
                self.enabled = False
                return
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                                     transient=True)
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        if self.progress is not None and delta:
            self.progress.advance(self.task, delta)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class ControllerStore:
    """Store with UserError instead of StoreError and progress bars; `.store` is the raw Store."""

    def __init__(self, store: Store, bars: bool = True):
        self.store, self.bars = store, bars
        self.uri = store.uri

    def _run(self, label: str, fn):
        bar = _Bar(label, self.bars)
        try:
            with _user_errors():
                return fn(bar)
        finally:
            bar.close()

    def put_dir(self, local_dir: str | os.PathLike, name: str, exclude: Iterable[str] = ()) -> Transfer:
        return self._run(f"↑ {name}", lambda bar: self.store.put_dir(local_dir, name, exclude, progress=bar))

    def put_file(self, local: str | os.PathLike, name: str) -> Transfer:
        return self._run(f"↑ {name}", lambda bar: self.store.put_file(local, name, progress=bar))

    def get_dir(self, name: str, dest: str | os.PathLike) -> Transfer:
        return self._run(f"↓ {name}", lambda bar: self.store.get_dir(name, Path(dest), progress=bar))

    def read_manifest(self, name: str) -> dict | None:
        with _user_errors():
            return self.store.read_manifest(name)

    def list_manifests(self, prefix: str = "") -> list[str]:
        with _user_errors():
            return self.store.list_manifests(prefix)

    def has_object(self, sha: str) -> bool:
        with _user_errors():
            return self.store.has_object(sha)

    def object_uri(self, sha: str) -> str:
        return self.store.object_uri(sha)

    def manifest_uri(self, name: str) -> str:
        with _user_errors():
            return self.store.manifest_uri(name)
