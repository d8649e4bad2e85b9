"""Padded static batches: the requests waiting when the model is free run together as one
``model.generate`` over left-padded prompts; a request that arrives meanwhile waits for the next
batch.

On a CPU, transformers' continuous batching pays a per-step overhead that its batches do not
earn back: without bf16 units (fp32) it gave 1.5x the naive rate at 16 chats where padded static
batches gave 3.6x (``wxassist bench generate`` prints both, and the CPU, in one run). A static
batch holds every request until the longest answer in it ends and takes no newcomer until then,
which bursty chat traffic pays for in latency; on a GPU continuous batching is both faster and
fairer, so ``generate_engine: auto`` takes this engine on CPUs only (``engine_choice.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from functions.common.errors import ModelError
from functions.generate.batching_engine import REPLACEMENT_CHAR, load_model, prompt_ids, warm_up
from functions.generate.core import Completion, Message

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    prompt: list[int]
    max_new_tokens: int
    done: threading.Event = field(default_factory=threading.Event)
    completion: Completion | None = None
    error: str | None = None


class StaticBatchEngine:
    def __init__(self, model_dir: str | Path, *, device: str | None = None, torch_threads: int | None = None,
                 dtype: str = "auto", max_requests: int = 32, gather_s: float = 0.03,
                 request_timeout_s: float = 300.0):
        import torch

        self._torch = torch
        self._tokenizer, self._model, self.device, self.dtype = load_model(model_dir, device=device,
                                                                           torch_threads=torch_threads, dtype=dtype)
        self.model_name = Path(model_dir).name
        self._eos = self._tokenizer.eos_token_id
        self._pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._eos
        self._max_requests = max_requests
        # Requests sent together (a burst, or the chats a finished batch just answered) reach
        # the engine a few milliseconds apart: the batch starts once none has arrived for this
        # long, or when it is full.
        self._gather_s = gather_s
        self._request_timeout_s = request_timeout_s
        self._queue: list[_Pending] = []
        self._arrived = threading.Condition()
        self._closed = False
        self.batches = 0  # batches run so far
        # Warmed up alone, before the worker starts: no gathering window to wait out.
        self.tokens_per_s_at_start = warm_up(self._complete_alone, self.count_tokens)
        self._worker = threading.Thread(target=self._run, name="wxassist-static-batch", daemon=True)
        self._worker.start()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def complete(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        pending = _Pending(prompt_ids(self._tokenizer, messages), max(1, max_new_tokens))
        with self._arrived:
            if self._closed:
                raise ModelError("the engine is shut down")
            self._queue.append(pending)
            self._arrived.notify_all()
        if not pending.done.wait(self._request_timeout_s):
            with self._arrived:
                if pending in self._queue:
                    self._queue.remove(pending)
            raise ModelError(f"no answer from the generator within {self._request_timeout_s:.0f} s")
        if pending.error is not None:
            raise ModelError(f"generation failed: {pending.error}")
        assert pending.completion is not None
        return pending.completion

    def _complete_alone(self, messages: Sequence[Message], max_new_tokens: int) -> Completion:
        pending = _Pending(prompt_ids(self._tokenizer, messages), max(1, max_new_tokens))
        self._generate([pending])
        assert pending.completion is not None
        return pending.completion

    def _next_batch(self) -> list[_Pending] | None:
        """The requests of the next batch, once gathered; None once the engine is closed."""
        with self._arrived:
            while not self._queue and not self._closed:
                self._arrived.wait()
            while not self._closed and len(self._queue) < self._max_requests:
                seen = len(self._queue)
                self._arrived.wait(self._gather_s)
                if len(self._queue) == seen:  # nobody else came: go
                    break
            if self._closed:
                return None
            batch, self._queue = self._queue[: self._max_requests], self._queue[self._max_requests:]
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._generate(batch)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch hears of it
                log.exception("static batch of %d failed", len(batch))
                for pending in batch:
                    pending.error = type(exc).__name__
            finally:
                for pending in batch:
                    pending.done.set()

    def _generate(self, batch: list[_Pending]) -> None:
        self.batches += 1
        torch = self._torch
        width = max(len(pending.prompt) for pending in batch)
        # Left padding: every prompt ends where its answer starts, in the same column.
        ids = torch.tensor([[self._pad] * (width - len(p.prompt)) + p.prompt for p in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(p.prompt)) + [1] * len(p.prompt) for p in batch], device=self.device)
        with torch.inference_mode():
            output = self._model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(p.max_new_tokens for p in batch),
                do_sample=False,  # greedy, no repetition penalty: see transformers_engine.py
                eos_token_id=self._eos,
                pad_token_id=self._pad,
            )
        for row, pending in enumerate(batch):
            tokens = [int(t) for t in output[row, width:width + pending.max_new_tokens]]
            if self._eos in tokens:  # a row that ended early is padded (with eos, here) after its end
                tokens = tokens[: tokens.index(self._eos) + 1]
            ended = bool(tokens) and tokens[-1] == self._eos
            text = self._tokenizer.decode(tokens, skip_special_tokens=True)
            pending.completion = Completion(
                text=text.rstrip(REPLACEMENT_CHAR),  # a budget cut can land inside a multi-byte character
                tokens_in=len(pending.prompt),
                tokens_out=len(tokens),
                truncated=not ended and len(tokens) >= pending.max_new_tokens,
            )

    def close(self) -> None:
        with self._arrived:
            if self._closed:
                return
            self._closed = True
            waiting, self._queue = self._queue, []
            self._arrived.notify_all()
        for pending in waiting:
            pending.error = "the engine is shut down"
            pending.done.set()
        self._worker.join(timeout=60)
