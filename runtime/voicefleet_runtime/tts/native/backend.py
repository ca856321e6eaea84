"""The torch TTS backend: the native model behind a micro-batcher.

Concurrent requests' chunks are gathered (tts/batcher.py) and spoken in one forward pass; a
chunk sounds the same alone or in a batch (native/layers.py says how). Loads only from the
packaged, sha256-checked graph (float_graph.py dequantises it; weights.py names its tensors).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from voicefleet_runtime.failure import briefly
from voicefleet_runtime.tts.batcher import MicroBatcher
from voicefleet_runtime.tts.float_graph import float_model
from voicefleet_runtime.tts.model import MODEL_SPEED_RANGE, BackendInfo
from voicefleet_runtime.tts.native.fused import compiled_tails
from voicefleet_runtime.tts.native.model import ChunkRequest, KokoroNet
from voicefleet_runtime.tts.native.weights import read_weights

logger = logging.getLogger("voicefleet.runtime")

DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_WAIT = 0.002
"""Seconds the batcher waits for company once a chunk is waiting (a batch running on the
device gathers the next one meanwhile, so under load this wait is rarely reached)."""


def load_net(int8_model: bytes, device: torch.device, dtype: torch.dtype) -> KokoroNet:
    return KokoroNet(read_weights(float_model(int8_model))).place(device, dtype)


class KokoroNative:
    """Kokoro as native torch modules on `device`; `synthesize` is safe from many threads."""

    def __init__(
        self,
        model: bytes,
        device: str,
        dtype: torch.dtype = torch.float32,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
        compiled: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self._tails = compiled_tails() if compiled else None
        self._compile_checked = False
        self.net = load_net(model, self.device, dtype)
        self.batcher: MicroBatcher[ChunkRequest, NDArray[np.float32]] = MicroBatcher(
            self.synthesize_batch, max_batch, max_wait
        )

    @property
    def compiled(self) -> bool:
        """Whether batches run the compiled tails (False after a failed compile too)."""
        return self._tails is not None

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("torch", self.device.type, str(self.dtype).removeprefix("torch."))

    @property
    def placement(self) -> str:
        return (
            f"native torch {torch.__version__} on {self.device} ({self.info.compute_type}), "
            f"up to {self.batcher.max_batch} chunks per batch"
            + (", norms and Snake compiled" if self.compiled else "")
        )

    def synthesize(
        self, token_ids: list[int], style: NDArray[np.float32], speed: float
    ) -> NDArray[np.float32]:
        """One chunk (pads included) to 24 kHz mono float32, batched with concurrent ones."""
        low, high = MODEL_SPEED_RANGE
        request = ChunkRequest(token_ids, style, min(max(speed, low), high))
        return self.batcher.submit(request)

    def synthesize_batch(self, requests: Sequence[ChunkRequest]) -> list[NDArray[np.float32]]:
        """Several chunks in one forward pass, in order.

        Compiled, only batches of two or more run the fused tails: a chunk alone is bound by
        launches either way, and the compiled calls' own overhead made it slower on the H200
        (bench/results/tts_gpu-h200.txt, run 5). The first such batch compiles them; where
        that cannot work (no C compiler for Triton's launcher in the image, say), the model
        goes back to running its norms op by op, says so once, and speaks: a slower pod, not
        one that never gets ready.
        """
        fused = self._tails is not None and len(requests) > 1
        self.net.use_tails(self._tails if fused else None)
        if not fused or self._compile_checked:
            return self._forward(requests)
        try:
            pieces = self._forward(requests)
        except Exception as error:  # the compiler's failure, whatever its type
            logger.warning(
                "compiling Kokoro's norms failed (%s); running them op by op", briefly(error)
            )
            self._tails = None
            self.net.use_tails(None)
            return self._forward(requests)
        self._compile_checked = True
        return pieces

    def _forward(self, requests: Sequence[ChunkRequest]) -> list[NDArray[np.float32]]:
        with torch.inference_mode():
            pieces = self.net(requests).audio
            lengths = [piece.shape[0] for piece in pieces]
            joined = torch.cat(pieces).float().cpu().numpy()
        return list(np.split(joined, np.cumsum(lengths)[:-1]))

    def warm_up(self, requests: list[tuple[list[int], NDArray[np.float32]]]) -> None:
        """One chunk alone, then all together: the two shape kinds a batch has, so that
        neither compiles nor picks kernels under the first load."""
        chunks = [ChunkRequest(ids, style, 1.0) for ids, style in requests]
        self.synthesize_batch(chunks[:1])
        self.synthesize_batch(chunks)

    def close(self) -> None:
        self.batcher.close()
