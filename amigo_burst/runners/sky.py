"""The SkyPilot runner: one sky/*.yaml task on RunPod, Vast.ai, Lambda or Slurm.

Thin wrappers over SkyPilot 0.14's Python SDK, one call each, so the launch loop reads
as "build, launch, stream, fetch outputs, down" and each step can be tested alone. ssh and
rsync to a cluster: sky_ssh.py; managed (spot) jobs: sky_jobs.py.
`import sky` costs ~2.6 s, so it happens inside the functions, never at import time.

SDK calls return request ids that a local API server executes (`sky.get` waits,
`sky.stream_and_get` streams the request's log). The server starts on first use and
reads the caller's HOME (~/.sky, ~/.slurm/config, cloud credentials).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from amigo_burst import clouds
from amigo_burst.errors import UserError
from amigo_burst.runners.sky_api import api_errors, sdk
from amigo_burst.runners.sky_ssh import rsync_down, signal_job  # noqa: F401 - the cluster calls, one place to import
from amigo_burst.secrets import SECRET_NAMES

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class LineWriter(io.TextIOBase):
    """A text stream that calls on_line once per complete line (ANSI colours removed).

    SkyPilot's log calls write to an output stream in arbitrary chunks; the launch loop
    wants lines (AMIGO_PROGRESS parsing, the run's log file). A last partial line is
    delivered on close().
    """

    def __init__(self, on_line: Callable[[str], None]):
        super().__init__()
        self._on_line = on_line
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._on_line(_ANSI.sub("", line).rstrip("\r"))
        return len(s)

    def close(self) -> None:
        if not self.closed and self._buf:
            self._on_line(_ANSI.sub("", self._buf).rstrip("\r"))
            self._buf = ""
        super().close()


# --- the task ------------------------------------------------------------------------------------


def load_task_yaml(yaml_path: Path | str) -> dict[str, Any]:
    path = Path(yaml_path)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"task file not found: {path}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: YAML syntax error: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a SkyPilot task (a mapping), got {type(cfg).__name__}")
    return cfg


def _with_gpu(resources: dict[str, Any], gpu: str) -> dict[str, Any]:
    """`--gpu H100` keeps the YAML's count (A100-80GB:2 -> H100:2); `--gpu H100:4` sets it.

    `NAME:COUNT@INSTANCE` (the plan's choice where a cloud's accelerator name means two cards,
    Vast's "A100" = 40 or 80 GB) also pins the catalog's instance type.
    """
    gpu, _, instance = gpu.partition("@")
    name, _, count = gpu.partition(":")
    if not count:
        current = resources.get("accelerators")
        if isinstance(current, dict) and len(current) == 1:
            count = str(next(iter(current.values())))
        elif isinstance(current, str) and ":" in current:
            count = current.partition(":")[2]
        else:
            count = "1"
    return {**resources, "accelerators": f"{name}:{count}", **({"instance_type": instance} if instance else {})}


def _with_gpus(resources: dict[str, Any], gpus: str | list[str]) -> dict[str, Any]:
    """One machine (_with_gpu), or several as SkyPilot's `resources.ordered`: the first that can be
    launched is rented, the next tried when a provider has none left (the plan's choice first)."""
    if isinstance(gpus, str) or len(gpus) == 1:
        return _with_gpu(resources, gpus if isinstance(gpus, str) else gpus[0])
    base = {k: v for k, v in resources.items() if k not in ("accelerators", "instance_type", "any_of", "ordered")}
    ordered = []
    for g in gpus:
        one = _with_gpu(resources, g)
        ordered.append({k: one[k] for k in ("accelerators", "instance_type") if k in one})
    return {**base, "ordered": ordered}


def _one_line(yaml_path: Path | str, err: Exception) -> str:
    """SkyPilot's validation message -> 'FILE: field: what is wrong' on one line."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    field = re.search(r"Check problematic field\(s\): \$\.?(\S*)", msg)
    unsupported = re.search(r"Found unsupported field '([^']+)'", msg)
    where = "resources." if msg.startswith("Invalid resources YAML") else ""
    msg = re.sub(r"^Invalid (task|resources) YAML: ", "", msg)
    msg = re.sub(r"\. Check problematic field\(s\):.*$", "", msg)
    msg = re.sub(r" does not match '\^.*'$", " is not valid", msg)
    if field and field.group(1):
        return f"{yaml_path}: {where}{field.group(1)}: {msg}"
    if unsupported:
        return f"{yaml_path}: {where}{unsupported.group(1)}: unknown field"
    return f"{yaml_path}: {msg}"


def build_task(
    yaml_path: Path | str,
    envs: dict[str, str],
    secrets: dict[str, str],
    workdir: Path,
    gpu: str | list[str] | None = None,
    file_mounts: dict | None = None,
):
    """A sky.Task from a sky/*.yaml file: envs overridden, secrets filled, workdir set.

    Secrets reach SkyPilot only through `secrets_overrides`: a `HF_TOKEN: null` entry is
    filled by nothing else, and the YAML text SkyPilot keeps (`_user_specified_yaml`) is
    taken before the overrides, so the value never lands in a stored YAML. A declared
    secret the user does not have is dropped: left null, SkyPilot would treat it as a
    managed-secret reference and fail the launch. Only secrets the YAML declares are sent
    (a RunPod API key in .env stays on the laptop).
    """
    import sky

    leaked = sorted(set(envs) & set(SECRET_NAMES))
    if leaked:
        raise UserError(f"{', '.join(leaked)} must be passed as a secret, not an env (envs are printed)")
    cfg = load_task_yaml(yaml_path)
    declared = cfg.get("secrets") or {}
    if not isinstance(declared, dict):
        raise UserError(f"{yaml_path}: secrets: expected a mapping NAME: null")
    kept = {k: v for k, v in declared.items() if v is not None or secrets.get(k)}
    cfg.pop("secrets", None)
    if kept:
        cfg["secrets"] = kept
    cfg["workdir"] = str(workdir)
    if file_mounts:
        cfg["file_mounts"] = {**(cfg.get("file_mounts") or {}), **file_mounts}
    if gpu:
        cfg["resources"] = _with_gpus(cfg.get("resources") or {}, gpu)
    try:
        return sky.Task.from_yaml_config(
            cfg,
            env_overrides=[(k, str(v)) for k, v in envs.items()],
            secrets_overrides=[(k, secrets[k]) for k in kept if secrets.get(k)],
        )
    except ValueError as e:  # schema errors are InvalidSkyPilotConfigError, a ValueError
        raise UserError(_one_line(yaml_path, e)) from None


def task_yaml(task) -> str:
    """The task as YAML for printing or storing: secret values replaced by <redacted>.

    `task.to_yaml_config()` itself carries the values (it is the launch payload).
    """
    from sky.task import redact_task_yaml_dict

    cfg = task.to_yaml_config()
    cfg.pop("_user_specified_yaml", None)
    redact_task_yaml_dict(cfg)
    return yaml.safe_dump(cfg, sort_keys=False)


def task_cloud(task) -> str | None:
    cloud = next(iter(task.resources)).cloud
    return str(cloud).lower() if cloud is not None else None


# --- clusters --------------------------------------------------------------------------------------


def launch(
    task, cluster: str, idle_minutes: int, keep: bool, on_line: Callable[[str], None], follow: bool = True,
    on_rented: Callable[[dict], None] | None = None,
) -> int:
    """Provision (or reuse) CLUSTER, sync workdir, submit setup + run; returns the job id.

    Provisioning output goes to on_line; with follow, so does the job's log until the job
    ends (`--detach`: follow=False, reattach later with tail()). Autostop is always set:
    a crashed controller never leaves a machine billing for more than idle_minutes.
    down=True unless keep (and on clouds that cannot stop, always).
    """
    sky = sdk()
    c = clouds.cloud(task_cloud(task))
    down = not keep or (c is not None and not c.can_stop)  # a cloud that cannot stop always tears down
    try:
        with LineWriter(on_line) as out:
            with contextlib.redirect_stdout(out):  # the SDK prints "Running on cluster: ..." itself
                rid = sky.launch(task, cluster_name=cluster, idle_minutes_to_autostop=idle_minutes, down=down)
            job_id, handle = sky.stream_and_get(rid, output_stream=out)
    except sky.exceptions.ResourcesUnavailableError as e:
        raise UserError(f"{cluster}: no machine available: {str(e).strip().splitlines()[0]}") from None
    if job_id is None:
        raise UserError(f"{cluster}: SkyPilot started no job (see `sky api logs`)")
    if on_rented is not None and (rented := rented_machine(handle)) is not None:
        on_rented(rented)
    if follow:
        tail(cluster, job_id, follow=True, on_line=on_line)
    return job_id


def accelerator_label(res) -> str:
    """A sky.Resources' accelerators as "H100:2" ("A:1, B:1" for several; "CPU" for none)."""
    return ", ".join(f"{k}:{v}" for k, v in (res.accelerators or {}).items()) or "CPU"


def rented_machine(handle) -> dict | None:
    """What SkyPilot actually rented (the plan's machine or a fallback): accelerator, instance type and
    the catalog's $/h; None when the handle says nothing (an older SkyPilot, a reused cluster)."""
    res = getattr(handle, "launched_resources", None)
    if res is None:
        return None
    accel = accelerator_label(res)
    try:
        usd_h = float(res.get_cost(3600))
    except Exception:  # a cloud without a price list (Slurm): no rate to record
        usd_h = None
    return {"accelerator": accel, "instance_type": res.instance_type, "usd_per_hour": usd_h}


@api_errors
def tail(cluster: str, job_id: int, follow: bool, on_line: Callable[[str], None]) -> int:
    """The job's log, line by line; returns SkyPilot's exit code (0 succeeded, 100 failed)."""
    sky = sdk()
    with LineWriter(on_line) as out:
        return sky.tail_logs(cluster, job_id, follow=follow, output_stream=out)


@api_errors
def job_status(cluster: str, job_id: int) -> str:
    """PENDING, SETTING_UP, RUNNING, SUCCEEDED, FAILED, FAILED_SETUP, CANCELLED... or UNKNOWN."""
    sky = sdk()
    status = sky.get(sky.job_status(cluster, [job_id])).get(job_id)
    return status.value if status is not None else "UNKNOWN"


@api_errors
def down(cluster: str) -> None:
    """Tear CLUSTER down; a cluster that is already gone is fine."""
    sky = sdk()
    try:
        sky.get(sky.down(cluster))
    except sky.exceptions.ClusterDoesNotExist:
        pass


@api_errors
def cluster_gone(cluster: str) -> bool:
    """Is CLUSTER gone for good (torn down, autodowned, its allocation cancelled or preempted)? SkyPilot
    asks the provider (refresh). A question that cannot be answered (no network) raises: the caller
    must not take "I cannot see it" for "it is gone"."""
    from sky.utils import common

    sky = sdk()
    records = sky.get(sky.status(cluster_names=[cluster], refresh=common.StatusRefreshMode.FORCE))
    return not records or records[0]["status"] is None


@api_errors
def our_clusters(prefix: str, refresh: bool = False) -> list[dict[str, Any]]:
    """Clusters this tool started (names start with PREFIX): name, status, launched_at (epoch s)."""
    from sky.utils import common

    sky = sdk()
    mode = common.StatusRefreshMode.AUTO if refresh else common.StatusRefreshMode.NONE
    records = sky.get(sky.status(refresh=mode))
    return [
        {"name": r["name"], "status": r["status"].value, "launched_at": r["launched_at"]}
        for r in records
        if r["name"].startswith(prefix)
    ]


# --- doctor ---------------------------------------------------------------------------------------


def cloud_access(name: str) -> tuple[bool, str]:
    """(SkyPilot can launch on cloud NAME, SkyPilot's own reason if not, as one line).

    SkyPilot's real credential check, `Cloud.check_credentials(COMPUTE)`, run in this process:
    no API server is started (`sky check` would start one and leave it running). What each cloud
    checks (SkyPilot 0.14): Vast - the key file ~/.config/vastai/vast_api_key; RunPod - the file
    ~/.runpod/config.toml, then its API (list instances); Lambda - ~/.lambda_cloud/lambda_keys, then
    its API; Slurm - ~/.slurm/config, then ssh to each cluster. Without the files no API is called.
    """
    try:
        from sky.clouds.cloud import CloudCapability
        from sky.utils import registry
    except OSError as e:  # SkyPilot makes ~/.sky/ on import: HOME not writable
        return False, f"SkyPilot cannot start: {e.filename or ''}: {e.strerror or e} (HOME must be a writable folder)"

    cloud = registry.CLOUD_REGISTRY.from_str(name)
    try:
        ok, reason = cloud.check_credentials(CloudCapability.COMPUTE)
    except Exception as e:  # noqa: BLE001 - a check that crashes means the same: not usable
        ok, reason = False, f"{e.__class__.__name__}: {e}"
    if ok:
        return True, ""
    if isinstance(reason, dict):  # Slurm/Kubernetes: one text per context
        reason = "; ".join(f"{k}: {v}" for k, v in reason.items())
    return False, _reason_line(str(reason or "no credentials"))


def _reason_line(text: str) -> str:
    """SkyPilot's multi-line hint -> the line that says what is wrong. Lead-ins to its own set-up
    recipe ("...go to:"), the recipe's `$` commands and "For more info" links are dropped: the
    caller adds our one-line fix instead."""
    for ln in (x.strip() for x in _ANSI.sub("", text).splitlines()):
        if not ln or ln.lower() == "error" or ln.startswith("$") or ln.lower().startswith("for more info"):
            continue
        if ln.endswith(":"):
            kept = [x for x in re.split(r"(?<=\.)\s+", ln) if not x.endswith(":")]
            if not kept:
                continue
            ln = " ".join(kept)
        return ln[:200] + ("…" if len(ln) > 200 else "")
    return "no credentials"


def enabled_clouds() -> dict[str, tuple[bool, str]]:
    """For each of runpod, vast, lambda, slurm: (SkyPilot can launch there, its reason + our fix if not).

    In-process checks (cloud_access): fast, and nothing left running. A launch needs no cache
    refresh from here: SkyPilot re-checks a cloud it has not seen enabled before it refuses one.
    """
    out = {}
    for name, c in clouds.CLOUDS.items():
        ok, why = cloud_access(name)
        out[name] = (ok, "" if ok else f"{why.rstrip('.')}: {c.fix}")
    return out
