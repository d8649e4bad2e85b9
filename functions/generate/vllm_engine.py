"""An optional engine for GPU machines with vLLM installed (``WXA_GENERATE_ENGINE=vllm``).

vLLM's ``AsyncLLMEngine`` does what ``ContinuousBatchingEngine`` does with transformers —
requests join and leave a running batch — plus paged attention kernels, CUDA graphs and
prefix caching, which matter once one GPU serves dozens of chats. It sits behind the same
``Engine`` interface: ``complete`` is called from the replica's request threads, so the
engine's own event loop runs in a thread of its own and each call waits on its future.

vLLM is not a dependency: it pulls a CUDA build of torch, which a CPU machine must never
install. Without it, choosing this engine fails at start with a clear error.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from functions.common.errors import ModelError
from functions.generate.batching_engine import REPLACEMENT_CHAR, prompt_ids, require_model
from functions.generate.core import Completion, Message

class VllmEngine:
    def __init__(self, model_dir: str | Path, *, max_requests: int = 32, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.85, max_model_len: int = 4096,
                 request_timeout_s: float = 300.0):
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise ModelError("WXA_GENERATE_ENGINE=vllm needs the vllm package, on a GPU machine "
                             "(pip install vllm); the default engine needs nothing more") from exc
        from transformers import AutoTokenizer

        model_dir = require_model(model_dir)
        self.model_name = model_dir.name
        self.device = "cuda"
        self.dtype = "bfloat16" if dtype == "auto" else dtype
        self._request_timeout_s = request_timeout_s
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="wxassist-vllm", daemon=True).start()
        arguments = AsyncEngineArgs(model=str(model_dir), dtype=self.dtype, max_num_seqs=max_requests,
                                    gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                    enable_prefix_caching=True)  # every prompt opens with the same system text

        async def start():
            return AsyncLLMEngine.from_engine_args(arguments)

        self._engine = self._run(start(), timeout_s=None)
        self.complete([{"role": "user", "content": "hi"}], max_new_tokens=2)  # CUDA graphs and kernels, before users

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))  # as the other engines count

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        prompt = prompt_ids(self._tokenizer, messages)
        request_id = f"wxa-{next(self._ids)}"
        output = self._run(self._generate(prompt, max_new_tokens, request_id), self._request_timeout_s,
                           on_timeout=lambda: self._engine.abort(request_id))
        choice = output.outputs[0]
        return Completion(
            text=choice.text.rstrip(REPLACEMENT_CHAR),  # a budget cut can land inside a multi-byte character
            tokens_in=len(prompt),
            tokens_out=len(choice.token_ids),
            truncated=choice.finish_reason == "length",
        )

    async def _generate(self, prompt: list[int], max_new_tokens: int, request_id: str):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        # Greedy like the other engines; only the finished output is sent back, not every step.
        sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for output in self._engine.generate({"prompt_token_ids": prompt}, sampling, request_id):
            final = output
        if final is None or not final.outputs:
            raise ModelError("vLLM finished the request without an output")
        return final

    def _run(self, coroutine, timeout_s: float | None, on_timeout=None):
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            if on_timeout is not None:
                asyncio.run_coroutine_threadsafe(on_timeout(), self._loop)
            raise ModelError(f"no answer from vLLM within {timeout_s:.0f} s") from None
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine died or refused the request
            raise ModelError(f"vLLM failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
