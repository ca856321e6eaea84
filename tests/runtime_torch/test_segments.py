"""Where segments are cut and where the next window starts, from a window's tokens."""

from __future__ import annotations

import pytest

from voicefleet_runtime.engine.torch_whisper.segments import split_window

BEGIN = 50364  # <|0.00|> in a multilingual vocabulary


def ts(seconds: float) -> int:
    return BEGIN + round(seconds / 0.02)


def test_pairs_of_timestamps_cut_segments_and_the_window_is_consumed() -> None:
    tokens = (ts(0), 10, 11, ts(2.5), ts(2.5), 12, ts(4.0))
    split = split_window(tokens, BEGIN, time_offset=30.0, window_frames=3000)
    assert [(p.start, p.end) for p in split.pieces] == [(30.0, 32.5), (32.5, 34.0)]
    assert split.pieces[1].tokens == (ts(2.5), 12, ts(4.0))
    assert split.advance_frames == 3000


def test_an_unfinished_segment_is_decoded_again_in_the_next_window() -> None:
    tokens = (ts(0), 10, ts(6.0), ts(6.0), 11, 12)
    split = split_window(tokens, BEGIN, time_offset=0.0, window_frames=3000)
    assert [(p.start, p.end) for p in split.pieces] == [(0.0, 6.0)]
    assert split.advance_frames == 600


def test_no_pair_gives_one_segment_up_to_the_last_timestamp() -> None:
    split = split_window((ts(0.4), 10, 11, ts(3.2)), BEGIN, time_offset=0.0, window_frames=1100)
    assert len(split.pieces) == 1
    assert split.pieces[0].start == pytest.approx(0.4)
    assert split.pieces[0].end == pytest.approx(3.2)
    assert split.advance_frames == 1100
