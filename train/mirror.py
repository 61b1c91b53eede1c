"""Checkpoints on disk and in the store, and mirroring to the store.

- `Mirror`: background uploads of checkpoints and outputs to AMIGO_STORE_URI, with retries.
- `complete_checkpoints` / `store_checkpoints`: finished checkpoint-<step> dirs, local and in the store.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from train.storage import names as manifest_names

if TYPE_CHECKING:
    from train.reporter import Reporter

CKPT_RE = re.compile(r"checkpoint-(\d+)$")


# --- checkpoints: local first, then the store ---------------------------------------------------


def complete_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """checkpoint-<step> dirs that finished saving. The Trainer writes trainer_state.json last
    (after weights, optimizer, scheduler, RNG), so a dir without it was cut off mid-save."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for d in ckpt_dir.iterdir():
        m = CKPT_RE.search(d.name)
        if m and d.is_dir() and (d / "trainer_state.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def store_checkpoints(store, run_id: str) -> list[tuple[int, str]]:
    names = store.list_manifests(manifest_names.checkpoints_prefix(run_id))
    found = []
    for name in names:
        m = CKPT_RE.search(name.removesuffix(".json"))
        if m:
            found.append((int(m.group(1)), name.removesuffix(".json")))
    return sorted(found)


# --- store mirroring ----------------------------------------------------------------------------


def _snapshot(src: Path, dst: Path) -> Path:
    """Hard-link copy: immune to the Trainer rotating (deleting) the checkpoint mid-upload, no bytes copied."""
    if dst.exists():
        shutil.rmtree(dst)

    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)
    return dst


class Mirror:
    """Uploads queued dirs to the store in a background thread; each put retried with backoff
    (1, 2, 4, 8, 16 s: ~31 s of store outage tolerated per upload)."""

    def __init__(self, uri: str, endpoint: str | None, run_id: str, out_dir: Path, reporter: Reporter,
                 tries: int = 6):
        from train.storage import open_store  # only when mirroring is on: boto3 stays optional

        self.store = open_store(uri, endpoint=endpoint or None)
        self.run_id, self.out_dir, self.reporter, self.tries = run_id, out_dir, reporter, tries
        self.staging = out_dir / ".mirror"
        self.q: queue.Queue = queue.Queue()
        self.uploaded: list[str] = []
        self.failed: list[str] = []
        self.thread = threading.Thread(target=self._work, name="amigo-mirror", daemon=True)
        self.thread.start()

    def checkpoint(self, ckpt: Path) -> None:
        name = manifest_names.checkpoint(self.run_id, ckpt.name)
        self.q.put((_snapshot(ckpt, self.staging / ckpt.name), name))

    def outputs(self) -> None:
        """adapter/, best/ (the best evaluated adapter while training), metrics.json, train.log, tb/ as the
        run's `outputs` manifest (checkpoints excluded)."""
        snap = self.staging / f"outputs-{time.monotonic_ns()}"
        snap.mkdir(parents=True)
        for item in ("adapter", "best", "metrics.json", "train.log", "tb"):
            src = self.out_dir / item
            if src.is_dir():
                _snapshot(src, snap / item)
            elif src.is_file():
                shutil.copy2(src, snap / item)  # still being appended to: copy, not link
        self.q.put((snap, manifest_names.outputs(self.run_id)))

    def _work(self) -> None:
        while (item := self.q.get()) is not None:
            snap, name = item
            for attempt in range(self.tries):
                try:
                    self.store.put_dir(str(snap), name)
                    self.uploaded.append(name)
                    break
                except Exception as e:  # StoreError, network errors: retry, never kill training
                    wait = 2.0**attempt
                    print(f"mirror: {name}: {e} (try {attempt + 1}/{self.tries})", file=sys.stderr, flush=True)
                    if attempt + 1 < self.tries:
                        time.sleep(wait)
            else:
                self.failed.append(name)
            shutil.rmtree(snap, ignore_errors=True)

    def close(self, timeout: float = 600.0) -> None:
        self.q.put(None)
        self.thread.join(timeout)
        shutil.rmtree(self.staging, ignore_errors=True)


def open_env_store():
    """The store named by AMIGO_STORE_URI / AMIGO_STORE_ENDPOINT (what the controller handed us)."""
    from train.storage import open_store

    return open_store(os.environ["AMIGO_STORE_URI"], endpoint=os.environ.get("AMIGO_STORE_ENDPOINT") or None)
