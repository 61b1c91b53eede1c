"""The clouds amigo-burst can rent from, and what each one can and cannot do: one table.

Capabilities are SkyPilot 0.14's, as its cloud classes declare them:
RunPod cannot stop a machine (only tear it down), has no multi-node and no bucket mounting;
Vast has no multi-node and no bucket mounting; Lambda cannot stop and has no spot; a Slurm
cluster has no spot and no prices (it is yours). Pricing, the SkyPilot runner, the target
registry and doctor all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cloud:
    name: str
    can_stop: bool  # False: autostop always tears down (down=True), even with --keep
    spot: bool  # managed spot jobs with recovery
    multi_node: bool
    bucket_mount: bool
    priced: bool  # SkyPilot ships a price catalog for it (~/.sky/catalogs/v8/<name>/vms.csv)
    fix: str  # what `doctor` tells a user whose credentials SkyPilot cannot find
    # SkyPilot accelerator names of this cloud that are a different row of gpus.csv than their own
    # name, e.g. Lambda's "H100" is the PCIe card (its SXM5 machines share the name and cost more);
    # Vast's "A100" is 40 or 80 GB: the 40 GB row, unless the offer's memory says 80
    # (hardware.gpu_for_accelerator).
    gpu_rows: dict[str, str] = field(default_factory=dict)


CLOUDS: dict[str, Cloud] = {c.name: c for c in (
    Cloud("runpod", can_stop=False, spot=True, multi_node=False, bucket_mount=False, priced=True,
          fix="runpod config   (asks for your API key, writes ~/.runpod/config.toml)",
          gpu_rows={"H100": "H100-PCIe", "H100-NVL": "H100-NVL", "A100-80GB-SXM": "A100-80GB", "H200-SXM": "H200",
                    "RTXA6000": "A6000"}),
    Cloud("vast", can_stop=True, spot=True, multi_node=False, bucket_mount=False, priced=True,
          fix="mkdir -p ~/.config/vastai && echo YOUR_KEY > ~/.config/vastai/vast_api_key",
          gpu_rows={"A100": "A100", "H100": "H100", "RTXA6000": "A6000"}),
    Cloud("lambda", can_stop=False, spot=False, multi_node=True, bucket_mount=True, priced=True,
          fix="mkdir -p ~/.lambda_cloud && echo 'api_key = YOUR_KEY' > ~/.lambda_cloud/lambda_keys",
          gpu_rows={"H100": "H100-PCIe", "A100": "A100"}),
    Cloud("slurm", can_stop=False, spot=False, multi_node=True, bucket_mount=False, priced=False,
          fix="describe the cluster's login node as an ssh Host entry in ~/.slurm/config"),
)}
PRICED = tuple(name for name, c in CLOUDS.items() if c.priced)  # runpod, vast, lambda


def cloud(name: str | None) -> Cloud | None:
    return CLOUDS.get((name or "").lower())
