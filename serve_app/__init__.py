"""wxassist's Serve application: ``compose_app`` puts the deployments together.

``build_app(args)`` is the import path for ``serve run deploy/local.yaml``, ``serve deploy``
and KubeRay's ``serveConfigV2``. Replicas, autoscaling and resources live in ``deploy/*.yaml``,
not in decorators: the builder applies ``serve.deployment(cls, **options)`` to plain classes.
The ingress is ``functions/ingress/``; the ``wxassist`` command is ``functions/cli/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from functions.common.serve_config import APP_NAME, read_serve_config_file
from functions.common.settings import load_settings
from functions.ingress.assembly import assemble_ingress
from functions.ingress.deployment import Ingress

REPO_DIR = Path(__file__).resolve().parents[1]
DEFAULT_SERVE_CONFIG = REPO_DIR / "deploy" / "local.yaml"


def compose_app(
    args: Mapping[str, Any] | None = None,
    deployment_options: Mapping[str, dict[str, Any]] | None = None,
    *,
    engine_cls: type | None = None,
    engine_kwargs: dict[str, Any] | None = None,
):
    """Compose the pipeline. ``args`` are non-secret settings overrides (validated here, in
    the driver, so a typo fails before any replica starts); ``deployment_options`` are
    Serve options per deployment name, as in a Serve config's ``deployments:`` list;
    ``engine_cls`` replaces the transformers engine (tests, other backends)."""
    from ray import serve

    from functions.decrypt.deployment import DecryptServer
    from functions.encrypt.deployment import EncryptServer
    from functions.generate.deployment import GenerateServer
    from functions.intent.deployment import IntentServer
    from functions.push.deployment import PushServer
    from functions.retrieve.deployment import RetrieveServer

    overrides = dict(args or {})
    settings = load_settings(**overrides)
    options = deployment_options or {}

    def deployment(name: str, cls: type):
        return serve.deployment(cls, name=name, **options.get(name, {}))

    if settings.pipeline_mode == "fused":  # decrypt, intent and encrypt inside the ingress: no hops
        decrypt = intent = encrypt = None
    else:
        decrypt = deployment("decrypt", DecryptServer).bind(overrides)
        intent = deployment("intent", IntentServer).bind(overrides)
        encrypt = deployment("encrypt", EncryptServer).bind(overrides)
    retrieve = deployment("retrieve", RetrieveServer).bind(overrides)
    generate = deployment("generate", GenerateServer).bind(engine_cls, engine_kwargs, overrides)
    push = deployment("push", PushServer).bind(overrides)
    ingress = deployment("ingress", serve.ingress()(Ingress))
    # Each ingress replica builds its collaborators with the assembly bound here (state stores
    # and tasks cannot travel to a replica; a function can).
    return ingress.bind(decrypt, intent, retrieve, generate, encrypt, push, overrides, None, assemble_ingress)


def build_app(args: dict[str, Any]):
    """Serve's application-builder entry point (``import_path: serve_app:build_app``)."""
    return compose_app(args)


def read_serve_config(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """(http_options, app args, options by deployment) from a Serve config file, validated
    with Serve's own schema so ``wxassist up`` and ``serve run`` accept the same files."""
    config = read_serve_config_file(path)
    options = config.deployment_options(APP_NAME)
    return config.schema.http_options.model_dump(exclude_unset=True), dict(config.application(APP_NAME).args or {}), options
