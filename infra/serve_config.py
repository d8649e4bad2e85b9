"""The RayService's ``serveConfigV2``, from the same ``deploy/*.yaml`` a local run serves.

One source of truth: the file is read and validated once with Ray's own
``ServeDeploySchema`` (``functions/common/serve_config.py``, which ``wxassist up`` uses too),
its validated text is what is emitted, and what the cluster needs from it (GPUs and CPUs at
peak) is read from the validated options, not guessed. A refused file raises
``ConfigurationError`` naming the file and the first problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from functions.common.serve_config import APP_NAME, read_serve_config_file

REPO_DIR = Path(__file__).resolve().parents[1]
SERVE_GRACEFUL_SHUTDOWN_S = 20.0  # Serve's default graceful_shutdown_timeout_s


@dataclass(frozen=True)
class ServeConfig:
    path: Path
    text: str  # serveConfigV2: the validated file's own text
    gpus_per_replica: dict[str, float]  # deployment -> num_gpus, where it asks for any
    cpus_per_replica: dict[str, float]  # deployment -> num_cpus (Ray's default: 1)
    max_replicas: dict[str, int]  # deployment -> replicas at peak
    graceful_shutdown_s: dict[str, float]  # deployment -> how long a stopping replica may finish its requests

    def peak_gpus(self) -> float:
        return sum(gpus * self.max_replicas[name] for name, gpus in self.gpus_per_replica.items())

    def peak_cpus_without_gpu(self) -> float:
        """CPUs the deployments that run on CPU nodes ask for at peak."""
        return sum(cpus * self.max_replicas[name] for name, cpus in self.cpus_per_replica.items()
                   if name not in self.gpus_per_replica)


def load_serve_config(relative_path: str) -> ServeConfig:
    config = read_serve_config_file((REPO_DIR / relative_path).resolve())
    gpus: dict[str, float] = {}
    cpus: dict[str, float] = {}
    peak: dict[str, int] = {}
    graceful: dict[str, float] = {}
    for name, options in config.deployment_options(APP_NAME).items():
        actor = options.get("ray_actor_options") or {}
        autoscaling = options.get("autoscaling_config") or {}
        peak[name] = int(autoscaling.get("max_replicas") or options.get("num_replicas") or 1)
        cpus[name] = float(actor.get("num_cpus", 1.0))
        graceful[name] = float(options.get("graceful_shutdown_timeout_s", SERVE_GRACEFUL_SHUTDOWN_S))
        if actor.get("num_gpus"):
            gpus[name] = float(actor["num_gpus"])
    return ServeConfig(config.path, config.text, gpus, cpus, peak, graceful)
