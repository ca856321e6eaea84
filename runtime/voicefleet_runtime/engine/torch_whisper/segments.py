"""Turn one window's tokens into timed segments and decide where the next window starts."""

from __future__ import annotations

from dataclasses import dataclass

from voicefleet_runtime.engine.torch_whisper.features import SECONDS_PER_FRAME
from voicefleet_runtime.engine.torch_whisper.tokens import SECONDS_PER_TIMESTAMP

FRAMES_PER_TIMESTAMP = round(SECONDS_PER_TIMESTAMP / SECONDS_PER_FRAME)


@dataclass(frozen=True)
class TimedTokens:
    start: float
    end: float
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class WindowSplit:
    pieces: tuple[TimedTokens, ...]
    advance_frames: int
    """How far the next window starts after this one (mel frames)."""


def split_window(
    tokens: tuple[int, ...], timestamp_begin: int, time_offset: float, window_frames: int
) -> WindowSplit:
    """Cut at each pair of adjacent timestamps, Whisper's segment boundary.

    When the window ends in the middle of a segment (its last timestamp is unpaired), the
    next window starts at that timestamp so the cut-off speech is decoded again in full.
    """

    def seconds(token: int) -> float:
        return time_offset + (token - timestamp_begin) * SECONDS_PER_TIMESTAMP

    is_time = [token >= timestamp_begin for token in tokens]
    ends_with_single_timestamp = len(tokens) >= 2 and is_time[-1] and not is_time[-2]
    boundaries = [i for i in range(1, len(tokens)) if is_time[i] and is_time[i - 1]]
    window_seconds = window_frames * SECONDS_PER_FRAME

    if not boundaries:
        timestamps = [token for token in tokens if token >= timestamp_begin]
        end = time_offset + window_seconds
        if timestamps and timestamps[-1] != timestamp_begin:
            end = seconds(timestamps[-1])
        start = seconds(timestamps[0]) if timestamps else time_offset
        return WindowSplit((TimedTokens(start, end, tokens),), window_frames)

    if ends_with_single_timestamp:
        boundaries.append(len(tokens))
    pieces: list[TimedTokens] = []
    previous = 0
    for boundary in boundaries:
        piece = tokens[previous:boundary]
        pieces.append(TimedTokens(seconds(piece[0]), seconds(piece[-1]), piece))
        previous = boundary
    if ends_with_single_timestamp:
        advance = window_frames
    else:
        advance = (tokens[previous - 1] - timestamp_begin) * FRAMES_PER_TIMESTAMP
    return WindowSplit(tuple(pieces), advance if advance > 0 else window_frames)
