"""The RayService's ``serveConfigV2``, from the same ``deploy/*.yaml`` a local run serves.

One source of truth: the file is validated with Ray's own ``ServeDeploySchema`` (what
``serve deploy`` and KubeRay accept) before it is emitted, and what the cluster needs from it
(GPUs at peak) is read from the validated model, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

REPO_DIR = Path(__file__).resolve().parents[1]


class ServeConfigError(ValueError):
    """The deploy file is not a Serve config Ray accepts."""


@dataclass(frozen=True)
class ServeConfig:
    path: Path
    text: str  # serveConfigV2: the validated file's own text
    gpus_per_replica: dict[str, float]  # deployment -> num_gpus, where it asks for any
    cpus_per_replica: dict[str, float]  # deployment -> num_cpus (Ray's default: 1)
    max_replicas: dict[str, int]  # deployment -> replicas at peak

    def peak_gpus(self) -> float:
        return sum(gpus * self.max_replicas[name] for name, gpus in self.gpus_per_replica.items())

    def peak_cpus_without_gpu(self) -> float:
        """CPUs the deployments that run on CPU nodes ask for at peak."""
        return sum(cpus * self.max_replicas[name] for name, cpus in self.cpus_per_replica.items()
                   if name not in self.gpus_per_replica)


def load_serve_config(relative_path: str) -> ServeConfig:
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    path = (REPO_DIR / relative_path).resolve()
    if not path.is_file():
        raise ServeConfigError(f"no Serve config at {relative_path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        schema = ServeDeploySchema.model_validate(raw)
    except ValidationError as exc:
        raise ServeConfigError(f"{relative_path} is not a valid Serve config: {exc.error_count()} error(s), "
                               f"first: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    gpus: dict[str, float] = {}
    cpus: dict[str, float] = {}
    peak: dict[str, int] = {}
    for application in schema.applications:
        for deployment in application.deployments:
            options = deployment.model_dump(exclude_unset=True)
            actor = options.get("ray_actor_options") or {}
            autoscaling = options.get("autoscaling_config") or {}
            peak[deployment.name] = int(autoscaling.get("max_replicas") or options.get("num_replicas") or 1)
            cpus[deployment.name] = float(actor.get("num_cpus", 1.0))
            if actor.get("num_gpus"):
                gpus[deployment.name] = float(actor["num_gpus"])
    return ServeConfig(path, path.read_text(encoding="utf-8"), gpus, cpus, peak)
