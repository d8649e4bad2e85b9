"""The Pulumi program: read the stack's settings once, refuse unsafe ones, wire the stack.

Pulumi runs this file from infra/; the repository root goes on the path so the program and
its tests import the same ``infra.*`` modules (and read the same deploy/*.yaml)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pulumi  # noqa: E402

from infra.config import Naming, read_stack_config  # noqa: E402
from infra.stack import build_stack, read_stack_secrets  # noqa: E402

stack_config = read_stack_config()
outputs = build_stack(stack_config, read_stack_secrets(stack_config),
                      Naming(project=pulumi.get_project(), stack=pulumi.get_stack()))
for key, value in outputs.items():
    pulumi.export(key, value)
