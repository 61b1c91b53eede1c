"""Fault injection on the local target (issue 7): break things on purpose, then check the promise —
no surprise bill, no lost adapter, a clear story in `status`.

Real parts only: the `amigo-burst` CLI as subprocesses, the detached worker, real TRL training of
the tiny offline model, the file:// store or moto's S3 server, the SQLite state DB, a real tmpfs.
AMIGO_FAULT_STEP_DELAY_S (train/callbacks.py) slows each step to open a window for the fault.
Every test takes the `faults` fixture (tests/faults_summary.py): the suite ends with one line,
"faults: N injected, N survived, 0 bytes of artifacts lost".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from faults_summary import manifest_lost, store_lost

from tests.helpers import cli, cli_argv, make_project, wait_for

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.faults, pytest.mark.slow]


# --- helpers ---------------------------------------------------------------------------------------
def run_cli(project: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return cli(project, *args, env=env, timeout=timeout)


def start_cli(project: Path, *args: str, env: dict | None = None, out: Path | None = None) -> subprocess.Popen:
    """A controller in the background; its stdout+stderr go to OUT (a file the test can poll)."""
    f = open(out or project / "controller.out", "wb")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(cli_argv(project, *args), cwd=project, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "160", "NO_COLOR": "1", **(env or {})},
                                stdin=subprocess.DEVNULL)
    finally:
        f.close()


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args[4:]} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def one_line_error(r: subprocess.CompletedProcess, *expect: str) -> str:
    """Exit 2, exactly one line on stderr, no traceback, containing every EXPECT."""
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], err[-2000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for e in expect:
        assert e in err, (e, err)
    return err


def runs(project: Path):
    from amigo_burst.state.records import RunStore

    return RunStore(project / ".amigo" / "state.db")


def only_run(project: Path):
    rows = runs(project).list()
    assert len(rows) == 1, [(r.id, r.status) for r in rows]
    return rows[0]


def wait_run(project: Path, timeout: float = 60):
    return wait_for(lambda: runs(project).list() if (project / ".amigo" / "state.db").is_file() else None,
                    "the run record", timeout)[0]


def run_dir(project: Path, run_id: str) -> Path:
    return project / ".amigo" / "runs" / run_id


def work_dir(project: Path, run_id: str) -> Path:
    return project / ".amigo" / "work" / run_id


def metrics(project: Path, run_id: str) -> dict:
    return json.loads((run_dir(project, run_id) / "metrics.json").read_text())


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def project_store(project: Path):
    from train.storage import open_store

    return open_store(f"file://{project}/.amigo/store")


def outputs_lost(project: Path, run_id: str, local: Path | None = None, prefix: str = "") -> int:
    """Bytes the store's outputs manifest of RUN_ID records that are not, verified, under LOCAL
    (default: the run's folder); with PREFIX, only those files, relative to it. train.log is the
    worker's own (it also holds setup's output), so it is not compared."""
    m = project_store(project).read_manifest(f"runs/{run_id}/outputs")
    assert m is not None, f"no outputs manifest for {run_id}"
    return manifest_lost(m, local or run_dir(project, run_id), prefix, skip=("train.log",))


def adapter_tensors(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(adapter / "adapter_model.safetensors")


def set_stage1(project: Path, **values) -> None:
    """Rewrite keys of [stages.1] in the project's amigo.toml (e.g. max_steps=40, max_hours=0.001)."""
    path = project / "amigo.toml"
    head, rest = path.read_text().split("[stages.1]\n", 1)
    body, tail = rest.split("\n\n", 1)
    lines = [ln for ln in body.splitlines() if ln.split("=")[0].strip() not in values]
    lines += [f"{k} = {v}" for k, v in values.items()]
    path.write_text(head + "[stages.1]\n" + "\n".join(lines) + "\n\n" + tail)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model) -> Path:
    """One uninterrupted stage-1 run (8 steps, file:// store): the yardstick, and a project to copy."""
    project = make_project(tmp_path_factory.mktemp("ref") / "proj", tiny_model)
    ok(run_cli(project, "launch", "--stage", "1"))
    assert only_run(project).status == "SUCCEEDED"
    return project


def copy_project(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("controller.out"))
    return dest


# --- 1. SIGKILL of the training process --------------------------------------------------------------
def test_sigkill_training_then_resume_matches_uninterrupted_run(reference, tiny_model, tmp_path, faults):
    """SIGKILL the training process mid-stage: `launch --resume` continues from the newest checkpoint to the same step count and adapter."""
    project = make_project(tmp_path / "p", tiny_model)
    ok(run_cli(project, "launch", "--stage", "1", "--detach", env={"AMIGO_FAULT_STEP_DELAY_S": "0.8"}))
    run = wait_run(project)
    ckpt = work_dir(project, run.id) / "outputs" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    wait_for(ckpt.is_file, "checkpoint-4", timeout=180)
    run = runs(project).get(run.id)
    assert run.status == "RUNNING" and run.child_pid
    faults.inject("SIGKILL the training process group mid-stage")
    os.killpg(run.child_pid, signal.SIGKILL)
    killed = wait_for(lambda: (r := runs(project).get(run.id)).status in ("FAILED", "STOPPED") and r,
                      "the worker to record the end", timeout=60)
    assert killed.status == "FAILED" and killed.reason.startswith("training process killed (signal 9)"), killed
    assert not (work_dir(project, run.id) / "outputs" / "metrics.json").exists(), "it was killed before the end"

    r = ok(run_cli(project, "launch", "--stage", "1", "--resume"))
    done = only_run(project)  # the same run id, continued
    assert done.id == run.id and done.status == "SUCCEEDED", (done, r.stdout[-2000:])
    m, ref = metrics(project, run.id), metrics(reference, only_run(reference).id)
    assert m["resumed_from"].endswith("checkpoint-4"), m["resumed_from"]
    assert m["steps"] == ref["steps"] == 8 and m["steps_this_run"] == 4
    # "as in an uninterrupted run": the same adapter (config, tensor names, shapes, dtypes) and the
    # same training curve. Not the same bits: two uninterrupted CPU runs already differ in the 3rd
    # decimal of the loss from step 3 on (thread scheduling), so values are compared loosely.
    ref_dir, got_dir = run_dir(reference, only_run(reference).id) / "adapter", run_dir(project, run.id) / "adapter"
    def adapter_config(d: Path) -> dict:
        c = json.loads((d / "adapter_config.json").read_text())
        return {**c, "target_modules": sorted(c["target_modules"])}  # PEFT writes a set: any order

    assert adapter_config(got_dir) == adapter_config(ref_dir)
    got, want = adapter_tensors(got_dir), adapter_tensors(ref_dir)
    assert {k: (v.shape, v.dtype) for k, v in got.items()} == {k: (v.shape, v.dtype) for k, v in want.items()}
    assert abs(m["last_loss"] - ref["last_loss"]) < 0.01 * ref["last_loss"], (m["last_loss"], ref["last_loss"])
    log = (run_dir(project, run.id) / "train.log").read_text()
    progress = [json.loads(ln.split(" ", 1)[1]) for ln in log.splitlines() if ln.startswith("AMIGO_PROGRESS ")]
    steps = [p["step"] for p in progress if "eval_loss" not in p]  # training lines (evaluations have their own)
    after = steps[steps.index(4) + 1:] if 4 in steps else steps
    assert after[-4:] == [5, 6, 7, 8] and 1 not in after, f"resumed at step 5, not from scratch: {steps}"
    faults.lost(outputs_lost(project, run.id))


# --- 2. SIGKILL of the controller ------------------------------------------------------------------
def test_sigkill_controller_while_streaming_then_logs_f_reattaches(tiny_model, tmp_path, faults):
    """SIGKILL the controller while it streams the log: training goes on, `logs -f` reattaches, the run ends SUCCEEDED with outputs local."""
    project = make_project(tmp_path / "p", tiny_model)
    ctl = start_cli(project, "launch", "--stage", "1", env={"AMIGO_FAULT_STEP_DELAY_S": "0.5"})
    run = wait_run(project)
    log = run_dir(project, run.id) / "train.log"
    wait_for(lambda: log.is_file() and "AMIGO_PROGRESS" in log.read_text(), "the first progress line",
             timeout=180, proc=ctl)
    faults.inject("SIGKILL the controller while it follows the log")
    ctl.send_signal(signal.SIGKILL)
    ctl.wait(10)
    from amigo_burst.state.records import pid_alive

    mid = runs(project).get(run.id)
    assert mid.status == "RUNNING" and pid_alive(mid.pid), "the worker outlives its controller"

    r = ok(run_cli(project, "logs", run.id, "-f"))
    assert f"{run.id}: SUCCEEDED" in r.stdout and "stage 1" in r.stdout, r.stdout[-2000:]
    end = runs(project).get(run.id)
    assert end.status == "SUCCEEDED" and end.downloaded
    assert metrics(project, run.id)["steps"] == 8
    faults.lost(outputs_lost(project, run.id))
    assert run.id in ok(run_cli(project, "status")).stdout


# --- 3. The S3 endpoint goes away mid-upload ---------------------------------------------------------
def test_s3_endpoint_outage_mid_upload_retries_and_completes(moto_server, tiny_model, tmp_path, faults):
    """The S3 endpoint goes away mid-upload and comes back: the launch retries, completes, manifests consistent, no stray objects."""
    from tests.test_storage import FlakyEndpoint, boto_client, new_bucket
    from train.storage import open_store, sha256_file

    bucket = new_bucket(moto_server)
    proxy = FlakyEndpoint(int(moto_server.rsplit(":", 1)[1]), bytes_per_s=40e3)  # ~200 KB of inputs: ~5 s
    proxy.start()
    endpoint = f"http://127.0.0.1:{proxy.port}"
    project = make_project(tmp_path / "p", tiny_model, f"s3://{bucket}/amigo", endpoint)
    out = tmp_path / "launch.out"
    ctl = start_cli(project, "launch", "--stage", "1", out=out, env={"AMIGO_STORE_RETRY_S": "120"})
    try:
        wait_for(lambda: proxy.up_bytes > 60_000, "the input upload to be under way", timeout=120, proc=ctl)
        assert "store:" not in out.read_text(), "the upload finished before the outage: nothing was tested"
        faults.inject("S3 endpoint gone mid-upload (connections cut, then refused for 2 s)")
        proxy.stop()
        time.sleep(2.0)
        proxy.rate = 50e6  # back, and fast: the rest of the run does not wait on the throttle
        proxy.start()
        ctl.wait(300)
    finally:
        if ctl.poll() is None:
            ctl.kill()
        proxy.stop()
    text = out.read_text()
    assert ctl.returncode == 0, text[-3000:]
    assert proxy.cut_mid_transfer >= 1, "no transfer was cut"
    run = only_run(project)
    assert run.status == "SUCCEEDED" and "store: " in text and "uploaded" in text

    st = open_store(f"s3://{bucket}/amigo", moto_server)
    code = st.read_manifest(f"code/{run.id}")
    from train.storage.core import ALWAYS_EXCLUDE, _walk

    local = {rel: sha256_file(p) for rel, p in _walk(REPO / "train", tuple(ALWAYS_EXCLUDE))}
    assert {rel: e["sha256"] for rel, e in code["files"].items()} == local, "code manifest = train/ as uploaded"
    referenced: dict[str, int] = {}
    for name in st.list_manifests():
        for e in st.read_manifest(name)["files"].values():
            referenced[e["sha256"]] = e["size"]
    keys = st.list_object_keys()
    stored = {k.rsplit("/", 1)[1] for k in keys}
    assert len(keys) == len(stored), "duplicate objects"
    # every manifest's objects present and whole (read back, hashed): the ledger's measure
    faults.lost(store_lost(st))
    missing = set(referenced) - stored
    assert not missing, f"manifests name objects the store lacks: {sorted(missing)[:3]}"
    # Objects no manifest names are earlier versions of runs/<id>/outputs (re-mirrored at every
    # checkpoint; the store keeps them, as content-addressed stores do until a GC): each must still be
    # whole, like every other object: its bytes hash to its name, nothing half-written under any key.
    c = boto_client(moto_server)
    for k in keys:
        assert k == f"amigo/objects/{k.rsplit('/', 1)[1][:2]}/{k.rsplit('/', 1)[1]}", k
        body = c.get_object(Bucket=bucket, Key=k)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == k.rsplit("/", 1)[1], f"object {k} is not whole"
    assert not boto_client(moto_server).list_multipart_uploads(Bucket=bucket).get("Uploads")
    dest = tmp_path / "check"
    st.get_dir(f"runs/{run.id}/outputs", dest)  # every object verifies (sha256) on the way down
    assert (dest / "adapter" / "adapter_model.safetensors").is_file()


# --- 4. A corrupted object in the store ----------------------------------------------------------------
def test_corrupted_store_object_is_refused_and_good_copy_untouched(reference, tmp_path, faults):
    """A corrupted adapter object in the store: `download` refuses naming the object, twice; the previous good copy is untouched."""
    from train.storage import open_store

    project = copy_project(reference, tmp_path / "p")
    run = only_run(project)
    good = tmp_path / "good"
    ok(run_cli(project, "download", run.id, "--to", str(good)))
    before = tree(good)
    assert "adapter_model.safetensors" in before

    st = open_store(f"file://{project}/.amigo/store")
    sha = st.read_manifest(f"runs/{run.id}/outputs")["files"]["adapter/adapter_model.safetensors"]["sha256"]
    obj = project / ".amigo" / "store" / "objects" / sha[:2] / sha
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    faults.inject("one bit flipped in the adapter's store object")
    obj.write_bytes(bytes(data))
    shutil.rmtree(run_dir(project, run.id) / "adapter")  # this laptop's copy is gone: the store must serve it

    for _ in range(2):  # and a retry never hands out the half-fetched adapter
        r = run_cli(project, "download", run.id, "--to", str(good))
        one_line_error(r, "sha256 mismatch", sha, "adapter/adapter_model.safetensors")
        assert not (run_dir(project, run.id) / "adapter" / "adapter_model.safetensors").exists()
    faults.lost(outputs_lost(project, run.id, good, prefix="adapter/"))  # the good copy, against the manifest
    assert tree(good) == before, "the previous good copy is untouched"
    assert not runs(project).get(run.id).downloaded, "the record no longer claims the outputs are here"


# --- 4b. The local copy of a download changed on disk --------------------------------------------------
def test_changed_local_copy_is_fetched_again_and_a_bad_store_object_refused(reference, tmp_path, faults):
    """4 bytes overwritten in .amigo/runs/<id>/adapter: `download` verifies the local copy against the
    manifest, fetches the file again from the store and delivers the right bytes; when the store's
    object is bad too, it refuses naming the file (never exit 0 with wrong bytes)."""
    from train.storage import open_store, sha256_file

    project = copy_project(reference, tmp_path / "p")
    run = only_run(project)
    local = run_dir(project, run.id) / "adapter" / "adapter_model.safetensors"
    entry = open_store(f"file://{project}/.amigo/store").read_manifest(
        f"runs/{run.id}/outputs")["files"]["adapter/adapter_model.safetensors"]
    faults.inject("4 bytes overwritten in the local copy of the adapter")
    with open(local, "r+b") as f:
        f.seek(entry["size"] // 2)
        f.write(b"\x00\xff\x00\xff")
    assert sha256_file(local) != entry["sha256"]
    dest = tmp_path / "out"
    r = ok(run_cli(project, "download", run.id, "--to", str(dest)))
    assert sha256_file(local) == entry["sha256"], "the local copy was fetched again"
    assert sha256_file(dest / "adapter_model.safetensors") == entry["sha256"], r.stdout
    faults.lost(outputs_lost(project, run.id))

    obj = project / ".amigo" / "store" / "objects" / entry["sha256"][:2] / entry["sha256"]
    data = bytearray(obj.read_bytes())
    data[10] ^= 0xFF
    obj.write_bytes(bytes(data))
    with open(local, "r+b") as f:
        f.write(b"\x00\xff\x00\xff")
    one_line_error(run_cli(project, "download", run.id), "sha256 mismatch", "adapter/adapter_model.safetensors")
    assert not runs(project).get(run.id).downloaded


# --- 5. The destination disk fills during a download --------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh small tmpfs (we run as root in CI); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(where: Path, size: str = "64k") -> Path:
        where.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"mount tmpfs failed (needs root): {r.stderr}"
        mounted.append(where)
        return where

    yield mount
    for m in reversed(mounted):  # a process of the test's run may hold a file there a moment longer
        for _ in range(20):
            if subprocess.run(["umount", str(m)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "--lazy", str(m)], check=False)


def test_disk_full_during_download_is_clean(reference, tmp_path, tmpfs, faults):
    """The destination disk fills during a download (64 KiB tmpfs): one-line error, no partial file, not marked downloaded; freeing space then works."""
    project = copy_project(reference, tmp_path / "p")
    run = only_run(project)
    expected = tree(run_dir(project, run.id) / "adapter")

    # a) --to on a full disk: the atomic copy leaves nothing behind
    dest = tmpfs(tmp_path / "usb")
    faults.inject("ENOSPC while copying the adapter to --to")
    err = one_line_error(run_cli(project, "download", run.id, "--to", str(dest / "adapter")),
                         "No space left on device", str(dest / "adapter"))
    assert len(err) < 300 and "[(" not in err, f"one readable line, not copytree's list of tuples: {err}"
    assert list(dest.iterdir()) == [], "no partial file at the destination"

    # b) the store -> the run's local folder on a full disk
    shutil.rmtree(run_dir(project, run.id))
    local = tmpfs(run_dir(project, run.id))
    faults.inject("ENOSPC while fetching the outputs from the store")
    one_line_error(run_cli(project, "download", run.id), "disk full while writing",
                   "adapter/adapter_model.safetensors")
    assert not (local / "adapter" / "adapter_model.safetensors").exists()
    assert not [p for p in (local / ".partial").rglob("*") if p.is_file()], "no partial file left"
    assert not runs(project).get(run.id).downloaded, "state not marked downloaded"

    subprocess.run(["mount", "-o", "remount,size=4m", str(local)], check=True)  # space freed
    ok(run_cli(project, "download", run.id, "--to", str(tmp_path / "final")))
    faults.lost(outputs_lost(project, run.id)  # the run's folder (on the tmpfs) and --to, against the manifest
                + outputs_lost(project, run.id, tmp_path / "final", prefix="adapter/"))
    final = tree(tmp_path / "final")
    assert "metrics.json" in final, "--to brings the run's metrics.json with the adapter"
    assert tree(local / "adapter") == expected == {k: v for k, v in final.items() if k != "metrics.json"}
    assert runs(project).get(run.id).downloaded


def test_disk_full_under_amigo_mid_run_is_the_recorded_reason(tiny_model, tmp_path, tmpfs, faults):
    """The disk holding .amigo/ fills up while a stage trains: the run ends FAILED with "disk full" as its
    reason (the worker frees a reserve to record it), not "worker process died"; `status` says so after
    space is freed; the state DB is whole."""
    import psutil

    project = make_project(tmp_path / "p", tiny_model)
    state = tmpfs(project / ".amigo", size="24m")
    ctl = start_cli(project, "launch", "--stage", "1", env={"AMIGO_FAULT_STEP_DELAY_S": "0.6"})
    filler = state / "filler.bin"
    try:
        run = wait_run(project, timeout=120)
        log = run_dir(project, run.id) / "train.log"
        wait_for(lambda: log.is_file() and "AMIGO_PROGRESS" in log.read_text(), "the first step", timeout=240,
                 proc=ctl)
        worker = next(p for p in psutil.process_iter(["cmdline"])
                      if "amigo_burst.lifecycle.worker" in " ".join(p.info["cmdline"] or []) and
                      run.id in " ".join(p.info["cmdline"] or []))
        faults.inject("the disk holding .amigo/ fills up mid-run")
        with open(filler, "wb", buffering=0) as f:  # unbuffered: closing it has nothing left to write
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        ctl.wait(300)  # the controller cannot even read the state DB now: it says so and exits
        worker.wait(300)  # the disk stays full until the worker has recorded the end
    finally:
        if ctl.poll() is None:
            ctl.kill()
    out = (project / "controller.out").read_text()
    assert "Traceback" not in out and "the disk is full" in out, out[-3000:]
    # while the disk is still full: commands say so in one line (SQLite cannot even open its WAL index)
    one_line_error(run_cli(project, "launch", "--stage", "1"), "the disk is full")
    filler.unlink()
    end = runs(project).get(run.id)
    assert end.status == "FAILED", (end, out[-2000:])
    assert end.reason.startswith("disk full: cannot write") and "No space left on device" in end.reason, end.reason
    st = ok(run_cli(project, "status", run.id))
    assert "disk full: cannot write" in st.stdout, st.stdout
    with sqlite3.connect(project / ".amigo" / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    faults.lost(store_bytes_lost(project))


def store_bytes_lost(project: Path) -> int:
    """Bytes of objects the project's store manifests name that are missing or do not hash to their name."""
    from train.storage import open_store, sha256_file

    st = open_store(f"file://{project}/.amigo/store")
    lost = 0
    for name in st.list_manifests():
        for e in st.read_manifest(name)["files"].values():
            obj = project / ".amigo" / "store" / "objects" / e["sha256"][:2] / e["sha256"]
            if not obj.is_file() or sha256_file(obj) != e["sha256"]:
                lost += e["size"]
    return lost


# --- 7. Two launches of one stage at once ----------------------------------------------------------------
def test_two_launches_of_one_stage_at_once(tiny_model, tmp_path, faults):
    """Two `launch` of the same stage at once: one runs, the other refuses with a clear message; the state DB stays consistent."""
    project = make_project(tmp_path / "p", tiny_model)
    env = {"AMIGO_FAULT_STEP_DELAY_S": "0.3"}
    faults.inject("two launches of stage 1 racing")
    procs = [start_cli(project, "launch", "--stage", "1", "--detach", env=env, out=tmp_path / f"l{i}.out")
             for i in range(2)]
    for p in procs:
        p.wait(180)
    outs = [(tmp_path / f"l{i}.out").read_text() for i in range(2)]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], (codes, outs)
    winner, loser = (outs[0], outs[1]) if procs[0].returncode == 0 else (outs[1], outs[0])
    run = only_run(project)
    assert run.id in winner
    err = [ln for ln in loser.strip().splitlines() if ln.strip()]
    assert "Traceback" not in loser and err[-1].startswith("error: stage 1 is already"), loser
    assert run.id in err[-1] and "wait for it or stop it first" in err[-1]

    ok(run_cli(project, "logs", run.id, "-f"))
    end = only_run(project)
    assert end.status == "SUCCEEDED"
    with sqlite3.connect(project / ".amigo" / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM runs WHERE status IN ('PENDING','RUNNING')").fetchone()[0] == 0
    faults.lost(outputs_lost(project, run.id))


# --- 9. The time budget runs out ------------------------------------------------------------------------
def test_time_budget_stops_at_step_boundary_with_downloadable_adapter(tiny_model, tmp_path, faults):
    """Time budget hit (max_hours): the entrypoint stops at a step boundary and saves; the run is STOPPED "budget" with a downloadable adapter."""
    project = make_project(tmp_path / "p", tiny_model)
    set_stage1(project, max_steps=40, max_hours=0.001)  # 3.6 s -> --max-runtime-s 3
    faults.inject("time budget runs out mid-stage")
    r = ok(run_cli(project, "launch", "--stage", "1", env={"AMIGO_FAULT_STEP_DELAY_S": "0.5"}))
    run = only_run(project)
    assert run.status == "STOPPED" and run.reason == "budget", (run, r.stdout[-2000:])
    assert "budget 3s" in r.stdout and f"{run.id}: STOPPED (budget)" in r.stdout
    m = metrics(project, run.id)
    assert m["exit_reason"] == "budget" and 0 < m["steps"] < 40
    ckpt = work_dir(project, run.id) / "outputs" / "checkpoints" / f"checkpoint-{m['steps']}"
    assert (ckpt / "trainer_state.json").is_file(), "saved at the stop step"

    dest = tmp_path / "adapter"
    ok(run_cli(project, "download", run.id, "--to", str(dest)))
    faults.lost(outputs_lost(project, run.id, dest, prefix="adapter/"))
    from train_helpers import generate_with_adapter

    generate_with_adapter(tiny_model, dest)  # the stopped run's adapter loads and generates
