"""The Pulumi program: read the stack's settings once, refuse unsafe ones, wire the stack.

Pulumi runs this file from infra/; the repository root goes on the path so the program and
its tests import the same ``infra.*`` modules (and read the same deploy/*.yaml)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pulumi  # noqa: E402

from infra.config import Naming  # noqa: E402
from infra.stack import program  # noqa: E402

for key, value in program(Naming(project=pulumi.get_project(), stack=pulumi.get_stack())).items():
    pulumi.export(key, value)
