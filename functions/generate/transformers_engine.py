"""The simple engine: one ``model.generate`` per request, one request at a time.

The baseline continuous batching (``batching_engine.py``, the default) is measured against,
and a fallback (``WXA_GENERATE_ENGINE=single``). dtype as there; SDPA attention; the replica
warms up once on start, on a prompt the size of a real one, so the first user does not pay for
lazy initialisation and the replica's pace starts from a measurement.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from functions.generate.batching_engine import REPLACEMENT_CHAR, load_model, warm_up
from functions.generate.core import Completion, Message


class TransformersEngine:
    def __init__(self, model_dir: str | Path, *, device: str | None = None, torch_threads: int | None = None,
                 dtype: str = "auto"):
        import torch

        self._tokenizer, self._model, self.device, self.dtype = load_model(model_dir, device=device,
                                                                           torch_threads=torch_threads, dtype=dtype)
        self._one_at_a_time = threading.Lock()
        self.model_name = Path(model_dir).name
        self._torch = torch
        self.tokens_per_s_at_start = warm_up(self.complete, self.count_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        inputs = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        with self._one_at_a_time, self._torch.inference_mode():
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
