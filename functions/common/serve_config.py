"""A Serve config file (``deploy/*.yaml``), read once and validated with Ray's own
``ServeDeploySchema``: what ``wxassist up``, the scaling simulator and the Pulumi program's
``serveConfigV2`` all start from, so each accepts exactly the files ``serve deploy`` and
KubeRay accept. Imports only yaml and Ray (infra/ runs it in its own environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.common.errors import ConfigurationError

APP_NAME = "wxassist"  # the application every deploy/*.yaml defines


@dataclass(frozen=True)
class ServeConfigFile:
    path: Path
    text: str  # the file as validated: what a RayService is given verbatim
    schema: Any  # ray.serve.schema.ServeDeploySchema

    def application(self, name: str):
        found = next((app for app in self.schema.applications if app.name == name), None)
        if found is None:
            raise ConfigurationError(f"{self.path}: no application named {name!r}")
        return found

    def deployment_options(self, app_name: str) -> dict[str, dict[str, Any]]:
        """Options by deployment name, as the file sets them (defaults left to Serve)."""
        return {deployment.name: deployment.model_dump(exclude_unset=True, exclude={"name"})
                for deployment in self.application(app_name).deployments}


def read_serve_config_file(path: Path) -> ServeConfigFile:
    import yaml
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"no Serve config at {path}: {exc.strerror}") from None
    try:
        schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(f"{path} is not a valid Serve config: {exc.error_count()} error(s), "
                                 f"first: {first['loc']}: {first['msg']}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not YAML: {exc}") from None
    return ServeConfigFile(path, text, schema)
