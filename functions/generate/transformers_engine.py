"""The default engine: a transformers causal LM loaded from the local model store.

CPU: fp32 (bf16 matmuls are slow on most CPUs). CUDA: bf16 with SDPA attention. The replica
warms up once on start so the first user does not pay for lazy initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from functions.common.errors import ModelError
from functions.generate.core import Completion, Message

REPLACEMENT_CHAR = "\ufffd"


class TransformersEngine:
    def __init__(self, model_dir: str | Path, *, device: str | None = None, torch_threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelError(f"no model at {model_dir}: run `wxassist model import-gguf` (make setup does)")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model_name = model_dir.name
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        self._model.to(self.device).eval()
        self.complete([{"role": "user", "content": "hi"}], max_new_tokens=2)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        inputs = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        with self._torch.inference_mode():
            output = self._model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                # Greedy and no repetition penalty: HF applies the penalty to prompt tokens
                # too, which stops a model from quoting the passages it was given.
                do_sample=False,
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
            )
        new_tokens = output[0, prompt_tokens:]
        ended = bool(len(new_tokens)) and int(new_tokens[-1]) == self._tokenizer.eos_token_id
        text = self._tokenizer.decode(new_tokens, skip_special_tokens=True)
        return Completion(
            # A budget cut can land inside a multi-byte character.
            text=text.rstrip(REPLACEMENT_CHAR),
            tokens_in=prompt_tokens,
            tokens_out=int(len(new_tokens)),
            truncated=not ended and len(new_tokens) >= max_new_tokens,
        )
