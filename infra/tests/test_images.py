"""deploy/Dockerfile builds the two images the RayService pulls: a slim CPU image for the head
and the CPU workers, and a CUDA image with vLLM for generate (no Docker daemon here: the file
is read, not built)."""

from __future__ import annotations

import re

from infra.serve_config import REPO_DIR

DOCKERFILE = REPO_DIR / "deploy" / "Dockerfile"


def stages(text: str) -> dict[str, str]:
    """Build stage name -> its base image."""
    return {name: base for base, name in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE)}


def dockerfile_problems(text: str, gpu_requirements: str) -> list[str]:
    found = []
    built = stages(text)
    if not {"cpu", "gpu"} <= set(built):
        found.append(f"targets {sorted(built)}: the stack pulls a cpu and a gpu image")
    if "cpu" in built and not built["cpu"].endswith("-cpu"):
        found.append(f"the cpu image starts from {built['cpu']}, not Ray's CPU image")
    if "cpu" in built and "whl/cpu" not in text:
        found.append("the cpu image installs the CUDA torch wheel")
    if not re.search(r"^vllm==\S+$", gpu_requirements, re.MULTILINE) or "requirements-gpu.txt" not in text:
        found.append("the gpu image does not install a pinned vLLM")
    return found


def test_the_dockerfile_builds_a_slim_cpu_image_and_a_gpu_image_with_vllm():
    requirements = (REPO_DIR / "deploy" / "requirements-gpu.txt").read_text(encoding="utf-8")
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8"), requirements) == []


def test_the_check_finds_the_single_image_of_before():
    before = "FROM rayproject/ray:2.60.0-py311-gpu\nRUN pip install --no-cache-dir -c constraints.txt .\n"
    assert len(dockerfile_problems(before, "")) == 2
