"""The ``wxassist`` command: one module per command group in this package, put together here."""

from __future__ import annotations

import argparse
import os
import sys

from functions.cli.bench import register_bench_commands
from functions.cli.eval import register_eval_command
from functions.cli.kb import register_kb_commands
from functions.cli.model import register_model_commands
from functions.cli.scaling import register_drain_command, register_simulate_command
from functions.cli.service import register_service_commands
from functions.cli.trace import register_trace_command
from functions.common.errors import WxAssistError
from observability.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxassist", description="Self-hosted AI assistant for WeChat on Ray Serve.")
    commands = parser.add_subparsers(dest="command", required=True)
    register_service_commands(commands)
    register_kb_commands(commands)
    register_eval_command(commands)
    register_model_commands(commands)
    register_trace_command(commands)
    register_simulate_command(commands)
    register_drain_command(commands)
    register_bench_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from observability.logs import quiet_libraries

    opts = _parser().parse_args(argv)
    quiet_libraries()  # before any model loads; replicas inherit it through the environment
    configure_logging(os.environ.get("WXA_LOG_LEVEL", "WARNING"))
    try:
        return opts.handler(opts)
    except WxAssistError as exc:  # errors become user messages only here, at the edge
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
