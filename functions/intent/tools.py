"""Tools: small pure functions that answer some questions better than a model would.

A tool declares the intents it serves and offers two pure methods: ``parse`` reads a message
and returns the arguments when the message is a request it serves (None otherwise), ``run``
turns those arguments into the answer. Tools run in the intent step, before retrieval and
generation, so a tool answer costs no GPU time and cannot be talked out of its job: what a
tool says depends on its arguments and its data, never on the model.

Adding one: write a class with ``name``, ``intents``, ``parse`` and ``run`` (see
``functions/intent/calculator.py``), and list its import path in ``WXA_TOOLS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from functions.common.errors import ConfigurationError


class Tool(Protocol):
    name: str
    intents: tuple[str, ...]  # what it answers, e.g. ("calculate",) or ("business_hours", "contact")

    def parse(self, text: str) -> Mapping[str, Any] | None:
        """The arguments when ``text`` asks for this tool, else None. Pure and cheap."""
        ...

    def run(self, arguments: Mapping[str, Any]) -> str:
        """The answer. Pure: the same arguments give the same answer."""
        ...


@dataclass(frozen=True)
class ToolAnswer:
    tool: str
    intent: str
    text: str


class ToolBox:
    """The configured tools, asked in order; the first that parses the message answers it."""

    def __init__(self, tools: Sequence[Tool]):
        self._tools = tuple(tools)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tool.name for tool in self._tools)

    def answer(self, text: str) -> ToolAnswer | None:
        for tool in self._tools:
            arguments = tool.parse(text)
            if arguments is not None:
                intent = str(arguments.get("intent", tool.intents[0]))
                return ToolAnswer(tool.name, intent, tool.run(arguments))
        return None


def load_tools(import_paths: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None = None) -> ToolBox:
    """Tools from ``module:Class`` paths; ``options`` by tool name are passed to constructors."""
    tools = []
    for path in import_paths:
        module_name, _, class_name = path.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"tool {path!r} cannot be loaded: {type(exc).__name__}") from exc
        tool = cls(**dict((options or {}).get(getattr(cls, "name", class_name), {})))
        tools.append(tool)
    return ToolBox(tools)
