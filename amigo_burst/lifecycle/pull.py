"""No bucket: the rented machine's checkpoints come back to this laptop as they are written, verified.

With a file:// store the trainer mirrors every checkpoint (and its outputs: adapter, best/,
metrics.json, train.log) into a store on the machine's own disk (inputs.MACHINE_STORE), hashing each
file there. `Puller.pull()` rsyncs this run's manifests from it, then exactly the objects they name
that this laptop's store lacks, and takes a manifest in only when every object hashed to the sha256
the machine computed (FileStore.adopt): a checkpoint on this laptop is a verified one, and
`launch --resume` on a fresh machine continues from it (resume.py). The worker pulls every
PULL_EVERY_S while it follows the job (PullLoop), and once more when the job has ended, before the
cluster is torn down: the stop checkpoint of `down`, of the budget, of a SIGTERM comes back too.

What a laptop away from the run risks: the steps since the last pull, if the machine ends (its cap,
a crash) before the laptop is back. An s3:// store has none of that risk (README, `[store]`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

from amigo_burst.errors import one_line
from amigo_burst.lifecycle.inputs import MACHINE_STORE_DIR
from amigo_burst.runners.sky_ssh import rsync_down
from amigo_burst.state import paths
from amigo_burst.state.store import open_from_config
from train.storage import names as manifest_names

PULL_EVERY_S = float(os.environ.get("AMIGO_PULL_EVERY_S") or 60)  # tests pull every few seconds
# the machine's store as rsync names it: relative to the remote home (rsync does not expand ~ in the
# source of --files-from)
REMOTE_STORE = MACHINE_STORE_DIR.removeprefix("~/")


class Puller:
    def __init__(self, cfg, run_id: str, cluster: str, sink):
        self.store = open_from_config(cfg, bars=False).store  # the laptop's file:// store
        self.run_id, self.cluster, self.sink = run_id, cluster, sink
        self.staging = paths.run_dir(cfg.root, run_id) / ".pull"
        self.lock = threading.Lock()

    def pull(self) -> list[str]:
        """One round: the names of the manifests newly taken in (verified)."""
        with self.lock:
            manifests = self._manifests()
            todo = [m for m in manifests if self.store.read_manifest(m["name"]) != m]
            need = sorted({e["sha256"] for m in todo for e in m["files"].values()
                           if not self.store.has_object(e["sha256"])})
            if need:
                listing = self.staging / "objects.txt"
                listing.write_text("".join(f"{sha[:2]}/{sha}\n" for sha in need))
                rsync_down(self.cluster, f"{REMOTE_STORE}/objects", self.staging / "objects", files_from=listing)
            taken = [m["name"] for m in todo if not self.store.adopt(m, self.staging / "objects")]
        for name in taken:
            if "/checkpoints/" in name:
                self.sink(f"{name.rsplit('/', 1)[1]} back on this laptop (sha256-verified)")
        return taken

    def _manifests(self) -> list[dict]:
        local = self.staging / "manifests"
        shutil.rmtree(local, ignore_errors=True)
        remote = f"{REMOTE_STORE}/manifests/{manifest_names.outputs(self.run_id).rsplit('/', 1)[0]}"
        if not rsync_down(self.cluster, remote, local, exclude=(".tmp-*",), missing_ok=True):
            return []  # nothing mirrored yet (training not started)
        found = []
        for p in sorted(local.rglob("*.json")):
            try:
                m = json.loads(p.read_text())
            except (OSError, ValueError):
                continue  # cut off mid-copy: the next round has it whole
            if isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("files"), dict):
                found.append(m)
        return found

    def newest_checkpoint(self) -> str | None:
        names = self.store.list_manifests(manifest_names.checkpoints_prefix(self.run_id))
        return max(names, key=lambda n: int(n.rsplit("-", 1)[1]), default=None)

    def last_pull(self, gone: bool) -> None:
        """After the job ended: what it left (the stop checkpoint, the final outputs), a few tries; a
        machine that is gone has nothing left to give: what came back before stays."""
        if gone:
            kept = self.newest_checkpoint()
            self.sink("the machine is gone: " + (f"{kept.rsplit('/', 1)[1]} came back before it went"
                                                 if kept else "no checkpoint came back before it went"))
            return
        for wait in (0, 5, 15):
            time.sleep(wait)
            try:
                self.pull()
                shutil.rmtree(self.staging, ignore_errors=True)
                return
            except Exception as e:  # noqa: BLE001 - said, then tried again
                self.sink(f"checkpoint pull: could not bring the machine's store back ({one_line(e)[:160]})")


class PullLoop:
    """`with PullLoop(puller, sink):` pulls every PULL_EVERY_S in a thread while the body follows the job
    (a None puller: nothing to do). A round that cannot reach the machine is said and tried again later."""

    def __init__(self, puller: Puller | None, sink, every_s: float = PULL_EVERY_S):
        self.puller, self.sink, self.every_s = puller, sink, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="amigo-pull", daemon=True)

    def __enter__(self):
        if self.puller is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=600)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self.puller.pull()
            except Exception as e:  # noqa: BLE001 - the machine out of reach now: next round
                self.sink(f"checkpoint pull: the machine is out of reach now ({one_line(e)[:160]}); again in "
                          f"{self.every_s:g} s")
