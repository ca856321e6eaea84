"""The continuous batching loop on CPU, with real models on real recordings.

The loop runs the same code on CPU as on a GPU (without CUDA graphs), so scheduling,
per-sequence state, fallback, cancellation and word timing are checked here. Order, not
time, is what the fairness test asserts: the loop's own event log says which window joined
the batch and finished at which decoder step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from numpy.typing import NDArray

from tests.runtime_torch.conftest import TEST_THREADS, normalise
from voicefleet_runtime.audio import decode_pcm16
from voicefleet_runtime.engine.base import (
    BatchingEngine,
    DecodeOptions,
    EngineError,
    Pcm16Engine,
    Segment,
    SpeechEngine,
    transcribe_pcm16,
)
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.remote import RemoteEngine
from voicefleet_runtime.engine.service import EngineService
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.batched import (
    BatchedSegments,
    BatchedWhisperEngine,
    BatchingConfig,
)
from voicefleet_runtime.engine.torch_whisper.batched.loop import LoopEvent
from voicefleet_runtime.engine.torch_whisper.batched.scheduler import admission_due

pytestmark = pytest.mark.slow

GREEDY = DecodeOptions(beam_size=1, temperature=(0.0,))
STUCK_SECONDS = 120
"""Only proves nobody is stuck: a bound, never a measurement."""


class EventLog:
    def __init__(self) -> None:
        self.events: list[LoopEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: LoopEvent) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, request: int, kind: str) -> list[LoopEvent]:
        with self._lock:
            return [e for e in self.events if e.request == request and e.kind == kind]

    def requests(self) -> list[int]:
        with self._lock:
            return sorted({e.request for e in self.events})


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STUCK_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"stuck waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def events() -> EventLog:
    return EventLog()


@contextmanager
def cpu_engine(
    model: ResolvedModel, on_event: EventLog | None = None, **config: Any
) -> Iterator[BatchedWhisperEngine]:
    """A batched engine on the CPU (float32) with BatchingConfig(**config), closed after."""
    engine = BatchedWhisperEngine.load(
        model, "cpu", "float32", BatchingConfig(**config), TEST_THREADS, on_event=on_event
    )
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def batched_tiny(tiny_en_model: ResolvedModel, events: EventLog) -> Iterator[BatchedWhisperEngine]:
    with cpu_engine(
        tiny_en_model,
        events,
        max_sequences=4,
        memory_gib=1.0,
        windows_per_request=2,
        overlap_steps="on",
    ) as engine:
        yield engine


@pytest.fixture(scope="module")
def batched_base(base_model: ResolvedModel) -> Iterator[BatchedWhisperEngine]:
    with cpu_engine(base_model, max_sequences=8, memory_gib=1.0, overlap_steps="on") as engine:
        yield engine


def clip(shared_audio: Path, name: str) -> NDArray[np.float32]:
    audio: NDArray[np.float32] = decode_audio(str(shared_audio / name))
    return audio


def decode(
    engine: SpeechEngine, audio: NDArray[np.float32], options: DecodeOptions
) -> list[Segment]:
    _, segments = engine.transcribe(audio, options)
    return list(segments)


def decode_together(
    engine: SpeechEngine, clips: list[NDArray[np.float32]], options: DecodeOptions = GREEDY
) -> list[list[Segment]]:
    """Each clip a request of its own, all at once, so they share the batch."""
    with ThreadPoolExecutor(len(clips)) as pool:
        return list(pool.map(lambda audio: decode(engine, audio, options), clips))


def text_of(segments: list[Segment]) -> str:
    return "".join(segment.text for segment in segments)


def test_it_is_a_speech_engine_with_words_and_vad(batched_tiny: BatchedWhisperEngine) -> None:
    engine: SpeechEngine = batched_tiny
    assert (engine.backend, engine.model_id, engine.device) == ("torch", "tiny.en", "cpu")
    assert engine.capabilities.word_timestamps
    assert engine.capabilities.vad


def test_batched_tokens_equal_sequential_greedy_on_the_same_windows(
    batched_tiny: BatchedWhisperEngine,
    tiny_en_engine: TorchWhisperEngine,
    shared_audio: Path,
) -> None:
    # Clips of at most 30 s: one window each, the same window for both decoders.
    clips = [
        clip(shared_audio, name) for name in ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav")
    ]
    batched = decode_together(batched_tiny, clips)
    for audio, together in zip(clips, batched, strict=True):
        alone = decode(tiny_en_engine, audio, GREEDY)
        assert [s.tokens for s in together] == [s.tokens for s in alone]
        assert [(s.start, s.end) for s in together] == [(s.start, s.end) for s in alone]
    assert max(batched_tiny.stats()["batch_histogram"]) > 1


def test_mixed_requests_in_one_batch_each_get_their_own_result(
    batched_base: BatchedWhisperEngine, shared_audio: Path
) -> None:
    jfk = clip(shared_audio, "jfk.flac")
    german = clip(shared_audio, "multilingual.mp3")[32 * 16000 : 46 * 16000]
    requests = {
        "detect": (jfk, DecodeOptions(beam_size=1)),
        "words": (jfk, DecodeOptions(beam_size=1, language="en", word_timestamps=True)),
        "untimed": (jfk, DecodeOptions(beam_size=1, language="en", segment_timestamps=False)),
        "german": (german, DecodeOptions(beam_size=1, language="de")),
        "translate": (german, DecodeOptions(beam_size=1, language="de", task="translate")),
    }

    def run(name: str) -> tuple[str, str, list[Segment]]:
        audio, options = requests[name]
        info, segments = batched_base.transcribe(audio, options)
        return name, info.language, list(segments)

    batched_base.reset_stats()
    with ThreadPoolExecutor(len(requests)) as pool:
        results = {
            name: (language, segments) for name, language, segments in pool.map(run, requests)
        }

    assert max(batched_base.stats()["batch_histogram"]) >= 3
    assert results["detect"][0] == "en"
    for name in ("detect", "words", "untimed"):
        text = normalise(text_of(results[name][1]))
        assert "ask not what your country can do for you" in text, (name, text)
    assert len(results["untimed"][1]) == 1  # one untimed segment for the window
    assert all(segment.words for segment in results["words"][1])
    assert not any(segment.words for segment in results["detect"][1])
    german_words = set(normalise(text_of(results["german"][1])).split())
    english_words = set(normalise(text_of(results["translate"][1])).split())
    assert {"die", "der", "und"} & german_words, german_words
    assert {"the", "of", "and"} & english_words, english_words
    assert not {"die", "der", "und"} & english_words, english_words


def test_word_timestamps_fall_inside_their_segments_in_order(
    batched_tiny: BatchedWhisperEngine, shared_audio: Path
) -> None:
    segments = decode(
        batched_tiny,
        clip(shared_audio, "jfk.flac"),
        DecodeOptions(beam_size=1, word_timestamps=True),
    )
    words = [word for segment in segments for word in segment.words]
    assert len(words) >= 20
    for segment in segments:
        assert segment.words
        assert "".join(w.word for w in segment.words).strip() == segment.text.strip()
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end
            assert 0.0 <= word.probability <= 1.0
    starts = [word.start for word in words]
    assert starts == sorted(starts)
    assert words[-1].end > words[0].start + 5  # spread over the clip, not piled up at 0


@pytest.mark.parametrize(
    ("waiting", "free", "decoding", "since_s", "due"),
    [
        (1, 64, 0, 0.0, True),  # an idle loop admits a lone window at once
        (1, 64, 10, 0.005, False),  # while others decode it waits for company...
        (8, 64, 10, 0.005, True),  # ... until a pass's worth has gathered
        (1, 64, 10, 0.02, True),  # ... or the wait is up
        (2, 2, 62, 0.0, True),  # or they fill every free slot
        (3, 0, 64, 1.0, False),  # no free slot: nothing to admit into
        (0, 64, 10, 1.0, False),  # nothing waiting
    ],
)
def test_admission_gathers_windows_while_others_decode(
    waiting: int, free: int, decoding: int, since_s: float, due: bool
) -> None:
    assert admission_due(waiting, free, decoding, since_s, batch=8, wait_s=0.02) is due


def test_a_long_request_does_not_starve_a_short_one(
    batched_tiny: BatchedWhisperEngine, events: EventLog, shared_audio: Path
) -> None:
    long_audio = np.concatenate([clip(shared_audio, "jfk.flac")] * 10)  # 110 s: 4 windows
    short_audio = clip(shared_audio, "hotwords.mp3")
    seen = set(events.requests())
    with ThreadPoolExecutor(2) as pool:
        long_done = pool.submit(decode, batched_tiny, long_audio, GREEDY)
        wait_for(lambda: len(set(events.requests()) - seen) == 1, "the long request to start")
        (long_id,) = set(events.requests()) - seen
        short_done = pool.submit(decode, batched_tiny, short_audio, GREEDY)
        short_text = text_of(short_done.result(timeout=STUCK_SECONDS))
        long_done.result(timeout=STUCK_SECONDS)
    (short_id,) = set(events.requests()) - seen - {long_id}
    admitted = {e.window: e.step for e in events.of(long_id, "admitted")}
    finished = {e.window: e.step for e in events.of(long_id, "finished")}
    (short_admitted,) = [e.step for e in events.of(short_id, "admitted")]
    (short_finished,) = [e.step for e in events.of(short_id, "finished")]
    assert sorted(finished) == [0, 1, 2, 3]
    # The long request never held the whole batch: one of the 4 slots stayed free for others...
    for step in admitted.values():
        held = sum(1 for w in admitted if admitted[w] <= step < finished[w])
        assert held <= 3, (admitted, finished)
    # ... so the short one joined, and finished, while the long one still had windows to go.
    assert short_admitted < max(admitted.values())
    assert short_finished < max(finished.values())
    assert short_text.strip()


def test_temperature_fallback_requeues_only_the_failing_window(
    batched_tiny: BatchedWhisperEngine, events: EventLog, shared_audio: Path
) -> None:
    ladder = (0.0, 0.5)
    # A log-prob threshold of 0 fails every decode: this request's window must fall back.
    failing = DecodeOptions(beam_size=1, temperature=ladder, extra={"log_prob_threshold": 0.0})
    passing = DecodeOptions(beam_size=1, temperature=ladder)
    seen = set(events.requests())
    jfk = clip(shared_audio, "jfk.flac")
    with ThreadPoolExecutor(2) as pool:
        failed = pool.submit(decode, batched_tiny, jfk, failing)
        passed = pool.submit(decode, batched_tiny, jfk, passing)
        failed_segments, passed_segments = failed.result(), passed.result()
    new = set(events.requests()) - seen
    requeued = {request for request in new if events.of(request, "requeued")}
    assert len(requeued) == 1
    (failing_id,) = requeued
    (passing_id,) = new - requeued
    assert [e.temperature for e in events.of(failing_id, "requeued")] == [0.0]
    assert [e.temperature for e in events.of(failing_id, "finished")] == [0.5]
    assert [e.temperature for e in events.of(passing_id, "finished")] == [0.0]
    assert {s.temperature for s in failed_segments} == {0.5}
    assert {s.temperature for s in passed_segments} == {0.0}


def test_closing_the_iterator_cancels_and_frees_the_slots(
    batched_tiny: BatchedWhisperEngine, events: EventLog, shared_audio: Path
) -> None:
    loop = batched_tiny.loops[0]
    long_audio = np.concatenate([clip(shared_audio, "jfk.flac")] * 10)  # 110 s: 4 windows
    seen = set(events.requests())
    _, segments = batched_tiny.transcribe(long_audio, GREEDY)
    assert isinstance(segments, BatchedSegments)
    first = next(segments)
    assert first.text.strip()
    segments.close()
    (request_id,) = set(events.requests()) - seen
    wait_for(lambda: loop.active_sequences() == 0, "the cancelled windows to leave the batch")
    assert loop.waiting() == (0, 0)
    assert len(events.of(request_id, "finished")) < 4
    assert list(segments) == []
    # The freed slots serve the next request.
    again = decode(batched_tiny, clip(shared_audio, "hotwords.mp3"), GREEDY)
    assert text_of(again).strip()


@pytest.fixture(scope="module")
def remote_tiny(batched_tiny: BatchedWhisperEngine) -> Iterator[RemoteEngine]:
    """batched_tiny behind engine/service.py, reached as API processes reach it: a socket."""
    service = EngineService()
    service.serve(batched_tiny)
    try:
        yield RemoteEngine.connect(service.address)
    finally:
        service.close()


def test_a_remote_engine_answers_as_the_engine_itself(
    remote_tiny: RemoteEngine, batched_tiny: BatchedWhisperEngine, shared_audio: Path
) -> None:
    assert isinstance(remote_tiny, BatchingEngine)
    assert (remote_tiny.backend, remote_tiny.model_id, remote_tiny.multilingual) == (
        "torch",
        "tiny.en",
        False,
    )
    assert remote_tiny.capabilities == batched_tiny.capabilities
    assert remote_tiny.languages == batched_tiny.languages == {"en"}
    jfk = clip(shared_audio, "jfk.flac")
    timed = DecodeOptions(beam_size=1, temperature=(0.0,), word_timestamps=True)
    assert decode(remote_tiny, jfk, timed) == decode(batched_tiny, jfk, timed)
    # The server's path: 16-bit samples cross, and the engine process scales them.
    pcm = decode_pcm16((shared_audio / "jfk.flac").read_bytes(), 60.0)
    assert isinstance(remote_tiny, Pcm16Engine)
    assert not isinstance(batched_tiny, Pcm16Engine)
    # One after the other: two requests sharing a batch may differ in the last float bits.
    from_pcm = list(transcribe_pcm16(remote_tiny, pcm, timed)[1])
    assert from_pcm == list(transcribe_pcm16(batched_tiny, pcm, timed)[1])
    assert "ask not what your country" in text_of(from_pcm)
    with pytest.raises(EngineError, match="English-only") as refused:
        remote_tiny.check(DecodeOptions(task="translate"))
    assert refused.value.param == "model"
    with pytest.raises(EngineError, match=r"not supported by model tiny\.en") as unknown:
        remote_tiny.check(DecodeOptions(language="de"))
    assert unknown.value.param == "language"
    with pytest.raises(EngineError, match="English-only"):
        remote_tiny.transcribe(jfk, DecodeOptions(task="translate"))
    assert remote_tiny.batch_stats().slots == batched_tiny.batch_stats().slots


def test_a_remote_caller_closing_its_segments_cancels_in_the_engine_process(
    remote_tiny: RemoteEngine,
    batched_tiny: BatchedWhisperEngine,
    events: EventLog,
    shared_audio: Path,
) -> None:
    loop = batched_tiny.loops[0]
    long_audio = np.concatenate([clip(shared_audio, "jfk.flac")] * 10)  # 110 s: 4 windows
    seen = set(events.requests())
    _, segments = remote_tiny.transcribe(long_audio, GREEDY)
    assert next(segments).text.strip()
    segments.close()  # type: ignore[attr-defined]
    (request_id,) = set(events.requests()) - seen
    wait_for(lambda: loop.active_sequences() == 0, "the cancelled windows to leave the batch")
    assert loop.waiting() == (0, 0)
    assert len(events.of(request_id, "finished")) < 4
    assert list(segments) == []


def test_vad_windows_cover_the_speech_of_a_long_recording(
    batched_tiny: BatchedWhisperEngine, shared_audio: Path
) -> None:
    audio = clip(shared_audio, "multilingual.mp3")
    segments = decode(batched_tiny, audio, DecodeOptions(beam_size=1, vad_filter=True))
    text = normalise(text_of(segments))
    assert "permission is hereby granted" in text
    assert segments[-1].end > 40
    assert [s.id for s in segments] == list(range(len(segments)))
    starts = [s.start for s in segments]
    assert starts == sorted(starts)


def test_an_encoder_the_compiler_cannot_build_runs_op_by_op(
    tiny_en_model: ResolvedModel,
    batched_tiny: BatchedWhisperEngine,
    shared_audio: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """compile_encoder where the compiler cannot build (here: no C++ compiler for inductor's CPU
    kernels; in a slim GPU image: none for Triton's launcher) loads and transcribes as before."""
    import torch
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    try:
        with (
            inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}),
            caplog.at_level("WARNING", logger="voicefleet.runtime.batching"),
            cpu_engine(
                tiny_en_model, max_sequences=2, memory_gib=1.0, compile_encoder=True
            ) as engine,
        ):
            assert "compiling the encoder failed" in caplog.text
            assert engine.loops[0].encode is engine.loops[0].model.encoder
            jfk = clip(shared_audio, "jfk.flac")
            ours = text_of(decode(engine, jfk, GREEDY))
            assert ours == text_of(decode(batched_tiny, jfk, GREEDY))
    finally:
        torch._dynamo.reset()


def test_a_float8_cross_attention_cache_transcribes_as_the_full_one(
    tiny_en_model: ResolvedModel, batched_tiny: BatchedWhisperEngine, shared_audio: Path
) -> None:
    """Float8 keys and values (one scale per slot and head) through the whole loop: concurrent
    windows (slots compacted as they finish), word timestamps from the dequantised cache."""
    with cpu_engine(
        tiny_en_model, max_sequences=4, memory_gib=1.0, float8_cross_attention="on"
    ) as engine:
        assert engine.loops[0].cache.float8_cross
        clips = [
            clip(shared_audio, name)
            for name in ("jfk.flac", "hotwords.mp3", "stereo_diarization.wav")
        ]
        words = DecodeOptions(beam_size=1, temperature=(0.0,), word_timestamps=True)
        float8 = decode_together(engine, clips, words)
        for audio, segments in zip(clips, float8, strict=True):
            assert text_of(segments) == text_of(decode(batched_tiny, audio, GREEDY))
        jfk_words = [word for segment in float8[0] for word in segment.words]
        assert len(jfk_words) >= 20
        assert [w.start for w in jfk_words] == sorted(w.start for w in jfk_words)


def test_overlapped_steps_decode_what_steps_one_at_a_time_decode(
    batched_base: BatchedWhisperEngine, base_model: ResolvedModel, shared_audio: Path
) -> None:
    """The fixture launches each step before reading the last (overlap on); an engine that
    reads every step first (off, the CPU default) must give the same tokens, language
    detection included: a detecting window is held one step while its language is read."""
    english = clip(shared_audio, "jfk.flac")
    german = clip(shared_audio, "multilingual.mp3")[32 * 16000 : 46 * 16000]
    with cpu_engine(
        base_model, max_sequences=8, memory_gib=1.0, overlap_steps="off"
    ) as one_at_a_time:
        assert not one_at_a_time.loops[0].overlap_steps
        assert batched_base.loops[0].overlap_steps
        decoded = {
            name: decode_together(engine, [english, german])
            for name, engine in (("overlapped", batched_base), ("in turn", one_at_a_time))
        }
        for overlapped, in_turn in zip(decoded["overlapped"], decoded["in turn"], strict=True):
            assert [s.tokens for s in overlapped] == [s.tokens for s in in_turn]
            assert [(s.start, s.end) for s in overlapped] == [(s.start, s.end) for s in in_turn]


def test_a_window_that_fills_the_context_ends_at_its_last_position(
    tiny_en_model: ResolvedModel, shared_audio: Path
) -> None:
    """A prompt of the most tokens a window may carry and a decode that will not end (a forced
    length past the room): the window stops when its tokens fill the context. With steps
    overlapped it is stepped once more before the host reads that it ended, at the context's
    last position: one more would index past the cache and fail the request."""
    with cpu_engine(
        tiny_en_model, max_sequences=2, memory_gib=1.0, forced_length=448, overlap_steps="on"
    ) as engine:
        options = DecodeOptions(beam_size=1, temperature=(0.0,), prompt=" ".join(["word"] * 400))
        segments = decode(engine, clip(shared_audio, "jfk.flac"), options)
        vocabulary = engine.tokenizer.vocabulary
        prompt = engine._prefix(options)
        start = [*engine.tokenizer.sot_sequence("en", "transcribe"), vocabulary.no_timestamps]
        sampled = sum(len(segment.tokens) for segment in segments)
        assert len(prompt) == engine.dims.n_text_ctx // 2  # <|startofprev|> and 223 tokens
        assert len(prompt) + len(start) + sampled == engine.dims.n_text_ctx


def test_an_encoder_that_cannot_be_captured_runs_op_by_op(
    batched_tiny: BatchedWhisperEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Where CUDA graphs cannot capture the encoder pass (here: no CUDA device), the loop keeps
    the module it was given and says why once, instead of failing the load."""
    import torch

    from voicefleet_runtime.engine.torch_whisper.batched.encoder import captured_encoder

    model = batched_tiny.loops[0].model
    with caplog.at_level("WARNING", logger="voicefleet.runtime.batching"):
        encode = captured_encoder(
            model.encoder, model.dims, torch.float32, torch.device("cpu"), max_windows=2
        )
    assert encode is model.encoder
    assert "capturing the encoder failed" in caplog.text
