"""SkyPilot's optimizer, offline: what a task would rent (cloud, instance, region, $/h).

No API server, no credentials, no network: the catalogs in ~/.sky/catalogs are all it reads
(`plan --cloud`, the dry-run tests). `import sky` happens inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

from amigo_burst.errors import UserError
from amigo_burst.runners.sky import accelerator_label, task_cloud


@contextlib.contextmanager
def _assume_enabled(cloud_names: list[str]) -> Iterator[None]:
    """Make the optimizer treat CLOUD_NAMES as enabled, for the duration of the block.

    Why: `plan` must answer before the user has set up credentials and without network.
    The optimizer asks sky.check which clouds are enabled; that check calls RunPod's and
    Lambda's APIs, and the SDK route (`sky.optimize`) also starts an API server (a
    background process, seconds). Pricing only needs the catalogs (~/.sky/catalogs), so
    we answer the enabled-clouds question ourselves and skip the capability check.
    """
    import importlib
    from unittest import mock

    from sky.utils import registry

    check = importlib.import_module("sky.check")  # the module; `sky.check` may name the SDK function
    enabled = [registry.CLOUD_REGISTRY.from_str(n) for n in cloud_names]
    with (
        mock.patch.object(check, "get_cached_enabled_clouds_or_refresh", lambda *a, **k: enabled),
        mock.patch.object(check, "check_capability", lambda *a, **k: {}),
    ):
        yield


def _did_you_mean(res, cloud: str | None) -> str:
    """' (did you mean A100-80GB?)': the cloud's catalog names that contain the asked-for name."""
    from sky import catalog

    if not cloud or not res.accelerators:
        return ""
    name = next(iter(res.accelerators))
    try:
        near = catalog.list_accelerators(gpus_only=True, name_filter=re.escape(name), clouds=cloud)
    except Exception:  # a hint only: never hide the real error behind a catalog problem
        return ""
    return f" (did you mean {', '.join(sorted(near))}?)" if near else ""


def optimize_offline(task) -> dict[str, Any]:
    """SkyPilot's optimizer choice for TASK without an API server: cloud, instance, region, $/h."""
    import requests
    from sky.optimizer import Optimizer
    from sky.utils import dag_utils

    import sky
    from sky import sky_logging

    cloud = task_cloud(task)
    res = next(iter(task.resources))
    wanted = accelerator_label(res)
    try:
        # the optimizer draws a spinner as payload text on stdout and logs its own version of
        # the error we raise below: keep the terminal to our one line
        with (
            _assume_enabled([cloud] if cloud else ["runpod", "vast", "lambda"]),
            contextlib.redirect_stdout(io.StringIO()),
            sky_logging.set_sky_logging_levels(logging.CRITICAL),
        ):
            dag = Optimizer.optimize(dag_utils.convert_entrypoint_to_dag(task), quiet=True)
    except sky.exceptions.ResourcesUnavailableError:
        raise UserError(
            f"{task.name}: {cloud or 'no cloud'} offers no {wanted}{_did_you_mean(res, cloud)}: check the "
            f"accelerator name against `sky show-gpus --infra {cloud or 'CLOUD'}`"
        ) from None
    except requests.exceptions.RequestException:  # no catalog yet, and SkyPilot could not fetch one
        raise UserError(
            f"{task.name}: SkyPilot has no {cloud or 'cloud'} catalog here and could not fetch one (no network?): "
            f"`amigo-burst prices --refresh` once online; `amigo-burst plan` prices from the shipped snapshot"
        ) from None
    best = dag.tasks[0].best_resources
    return {
        "cloud": str(best.cloud).lower(),
        "instance_type": best.instance_type,
        "region": best.region,
        "accelerator": accelerator_label(best),
        "usd_per_hour": best.get_cost(3600),  # catalog price of one hour; the provider's bill may differ
        "use_spot": best.use_spot,
    }
