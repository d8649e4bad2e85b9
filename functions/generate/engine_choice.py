"""Which engine generates where, and what the machine is.

``generate_engine: auto`` (the default) takes the faster batching on the machine it runs on,
decided by what it has rather than by a measurement at start (which would cost every replica
start, and vary with its neighbours' load): on a GPU, continuous batching; on a CPU, padded
static batches. On a CPU without bf16 units (fp32) ``wxassist bench generate`` measured static
batches 2.4x faster than continuous batching at 16 chats; on a CPU with AMX (bf16) an earlier
measurement gave static batches of 16 about 106 tokens/s against 83 to 94 for continuous
batching. docs/generation-and-scaling.md has the figures per CPU class."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    cpu: str  # the CPU's model name
    cuda: bool
    cpu_bf16: bool  # native bf16 matrix units, as oneDNN sees them

    def batching(self) -> str:
        """``continuous`` or ``static``: the faster one here."""
        return "continuous" if self.cuda else "static"


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def this_machine() -> Machine:
    import torch

    return Machine(cpu_model_name(), bool(torch.cuda.is_available()), bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
