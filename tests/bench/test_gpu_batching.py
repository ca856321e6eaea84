"""bench/gpu_batching.py's own arithmetic, where CI runs: the encoder FLOPs it quotes against
the bf16 peak, the closed loop that sets each row's concurrency, and how a goal is judged."""

from __future__ import annotations

import threading

import numpy as np
import torch
from closed_loop import closed_loop
from gpu_batching import Goal
from gpu_batching_engines import tiny_shape
from gpu_batching_measure import WINDOW_FRAMES, encoder_flops
from speech_corpus import Clip
from torch.utils.flop_counter import FlopCounterMode

from voicefleet_runtime.engine.torch_whisper.model import Whisper


@torch.inference_mode()
def test_encoder_flops_match_what_torch_counts_for_a_real_encoder_pass() -> None:
    dims = tiny_shape()
    with torch.device("meta"):
        encoder = Whisper(dims).encoder
    mel = torch.empty(1, dims.n_mels, WINDOW_FRAMES, device="meta")
    with FlopCounterMode(display=False) as counter:
        encoder(mel)
    assert counter.get_total_flops() == encoder_flops(dims)


def test_the_closed_loop_keeps_exactly_its_concurrency_in_flight() -> None:
    clips = [
        Clip(f"clip{i}", b"", np.zeros(16_000 * (i + 1), np.float32), f"words {i}")
        for i in range(3)
    ]
    lock = threading.Lock()
    in_flight = peak = 0
    # Each answer waits until four are in flight at once (not for a while), so that a busy machine
    # cannot make the loop look narrower than it is; a loop that never reaches four times out.
    four_in_flight = threading.Event()

    def answer(clip: Clip) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 4:
                four_in_flight.set()
        four_in_flight.wait(timeout=30)
        with lock:
            in_flight -= 1
        return clip.reference

    result = closed_loop(answer, clips, concurrency=4, requests=10, budget_s=60)
    assert peak == 4
    assert len(result.latencies) == 10
    assert sorted(clip.name for clip, _ in result.texts) == sorted(
        clips[i % 3].name for i in range(10)
    )
    row = result.row("m", "p", 4)
    assert row.wer == 0.0
    assert row.requests == 10
    assert row.audio_s_per_s == result.audio_seconds / result.wall_s


def test_a_goal_is_met_on_the_right_side_of_its_target_and_unmeasured_without_a_value() -> None:
    assert Goal("ratio", 2.5, 2.0).met is True
    assert Goal("ratio", 1.5, 2.0).met is False
    assert Goal("step ms", 4.0, 5.0, higher_is_better=False).met is True
    assert Goal("step ms", 6.0, 5.0, higher_is_better=False).met is False
    assert Goal("ratio", None, 2.0).met is None
    assert Goal("ratio", None, 2.0).line().startswith("not measured")
