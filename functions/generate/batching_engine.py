"""Continuous batching over one loaded model: what ``generate_engine: auto`` takes on a GPU
(``engine_choice.py``; on CPUs padded static batches are faster).

Every ``complete`` call, from any thread, becomes a request in transformers'
``ContinuousBatchingManager``: one background loop runs forward passes over all requests in
flight, each step a batch, and a request joins at the next step and leaves as soon as it
ends, never waiting for the longest answer in its batch. ``bench/generate.py`` measures it
against padded static batches and one ``model.generate`` per request (the naive way);
``bench/gpu_generate.py`` does the same on a GPU.

dtype: bf16 on CUDA, and on CPUs with native bf16 matrix units (AMX / AVX512-BF16), where
batched bf16 steps run several times faster than fp32; fp32 on other CPUs.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from functions.common.errors import ModelError
from functions.generate.core import Completion, Message

log = logging.getLogger(__name__)

REPLACEMENT_CHAR = "\ufffd"


def require_model(model_dir: str | Path) -> Path:
    """The model folder, or a ModelError saying how to get one."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"no model at {model_dir}: run `wxassist model pull` or `wxassist model import-gguf` "
                         "(make setup does the latter)")
    return model_dir


def load_model(model_dir: str | Path, *, device: str | None, torch_threads: int | None, dtype: str):
    """The tokenizer and the model on its device, for either engine: (tokenizer, model, device, dtype)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = require_model(model_dir)
    if torch_threads:
        torch.set_num_threads(torch_threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = pick_dtype(torch, device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype, attn_implementation="sdpa")
    return tokenizer, model.to(device).eval(), device, torch_dtype


WARM_UP_PROMPT_TOKENS = 370  # a real prompt's size: the system prompt, one FAQ passage, a question
WARM_UP_NEW_TOKENS = 16


def warm_up(complete: Callable[[Sequence[Message], int], Completion], count_tokens: Callable[[str], int]) -> float:
    """Run one request the size of a real one before the first user does (lazy initialisation
    is paid here), and return the tokens/s it ran at: the replica's pace to start from."""
    filler = "本段文字只用于在启动时测量生成速度，不是知识库的内容。"
    passage = filler
    while count_tokens(passage) < WARM_UP_PROMPT_TOKENS:
        passage += filler
    messages = [{"role": "system", "content": passage}, {"role": "user", "content": "这段文字讲了什么？"}]
    started = time.perf_counter()
    completion = complete(messages, WARM_UP_NEW_TOKENS)
    elapsed = time.perf_counter() - started
    return max(completion.tokens_out, 1) / elapsed


def prompt_ids(tokenizer, messages: Sequence[Message]) -> list[int]:
    """The chat as the model's prompt tokens, ending where the assistant's answer starts."""
    return list(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                              return_dict=True)["input_ids"])


def pick_dtype(torch, device: str, requested: str = "auto"):
    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


class ContinuousBatchingEngine:
    def __init__(self, model_dir: str | Path, *, device: str | None = None, torch_threads: int | None = None,
                 dtype: str = "auto", max_new_tokens: int = 512, max_requests: int = 32,
                 request_timeout_s: float = 300.0):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        self._tokenizer, model, self.device, self.dtype = load_model(model_dir, device=device,
                                                                     torch_threads=torch_threads, dtype=dtype)
        self.model_name = Path(model_dir).name
        self._request_timeout_s = request_timeout_s
        self._eos = self._tokenizer.eos_token_id
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,  # greedy, no repetition penalty: see transformers_engine.py
            eos_token_id=self._eos,
            pad_token_id=self._tokenizer.pad_token_id or self._eos,
        )
        # On a GPU transformers sizes the paged KV cache from free memory. A CPU has no such
        # reading: the cache holds max_requests contexts of 1k tokens, in small pages, and a
        # step takes at most 1k tokens so long prefills are cut into chunks between decode
        # steps: on a 2-core CPU, 94 tokens/s for 16 prompts where 64-token pages and 4k-token
        # steps gave 65 (docs/generation-and-scaling.md, "Generation: continuous batching").
        batching = ContinuousBatchingConfig(max_requests_per_batch=max_requests) if self.device.startswith("cuda") else \
            ContinuousBatchingConfig(page_size=32, num_blocks=max_requests * 32, max_batch_tokens=1024,
                                     max_requests_per_batch=max_requests)
        self._manager = model.init_continuous_batching(generation_config=generation,
                                                       continuous_batching_config=batching)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list]] = {}
        self._closed = False
        self._manager.start()
        # The manager's loop is a non-daemon thread: stop it before the interpreter waits on it.
        threading._register_atexit(self.close)
        self._dispatcher = threading.Thread(target=self._dispatch, name="wxassist-cb-results", daemon=True)
        self._dispatcher.start()
        self.tokens_per_s_at_start = warm_up(self.complete, self.count_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        prompt = prompt_ids(self._tokenizer, messages)
        request_id = f"wxa-{next(self._ids)}"
        done, box = threading.Event(), []
        with self._lock:
            if self._closed:
                raise ModelError("the engine is shut down")
            self._waiting[request_id] = (done, box)
        try:
            accepted = self._manager.add_request(prompt, request_id=request_id, max_new_tokens=max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - its input queue is full, or the loop died
            self._forget(request_id)
            raise ModelError(f"the generator did not take the request ({type(exc).__name__})") from exc
        if accepted is None:
            self._forget(request_id)
            raise ModelError("the generator is not accepting requests")
        if not done.wait(self._request_timeout_s):
            self._forget(request_id)
            self._manager.cancel_request(request_id)
            raise ModelError(f"no answer from the generator within {self._request_timeout_s:.0f} s")
        result = box[0]
        if result.error:
            raise ModelError(f"generation failed: {result.error}")
        tokens = list(result.generated_tokens)
        ended = bool(tokens) and tokens[-1] == self._eos
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(
            text=text.rstrip(REPLACEMENT_CHAR),  # a budget cut can land inside a multi-byte character
            tokens_in=len(prompt),
            tokens_out=len(tokens),
            truncated=not ended and len(tokens) >= max_new_tokens,
        )

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    def _dispatch(self) -> None:
        """Hands each finished result to the thread waiting for it."""
        while not self._closed:
            result = self._manager.get_result(timeout=0.2)
            if result is None:
                if not self._manager.is_running() and not self._closed:
                    self._fail_all("the generation loop stopped")
                    return
                continue
            if not result.is_finished():
                continue
            with self._lock:
                waiter = self._waiting.pop(result.request_id, None)
            if waiter is not None:
                waiter[1].append(result)
                waiter[0].set()

    def _fail_all(self, reason: str) -> None:
        from transformers.generation.continuous_batching.requests import GenerationOutput

        with self._lock:
            waiting, self._waiting = self._waiting, {}
        if waiting:
            log.error("continuous batching: %s; failing %d requests", reason, len(waiting))
        for request_id, (done, box) in waiting.items():
            box.append(GenerationOutput(request_id=request_id, error=reason))
            done.set()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._manager.stop(block=True, timeout=10)
        self._fail_all("the engine is shut down")
