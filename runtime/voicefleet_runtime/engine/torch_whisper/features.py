"""Whisper's log-mel spectrogram computed in torch, so it can run on the engine's device."""

from __future__ import annotations

import math

import numpy as np
import torch

from voicefleet_runtime.engine.base import SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES_PER_CHUNK = CHUNK_SECONDS * SAMPLE_RATE
N_FRAMES_PER_CHUNK = N_SAMPLES_PER_CHUNK // HOP_LENGTH
"""3000 mel frames feed the encoder; it halves them to 1500 positions of 20 ms."""
SECONDS_PER_FRAME = HOP_LENGTH / SAMPLE_RATE


def _hz_to_mel(frequency: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (what Whisper was trained on)."""
    linear_step = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / linear_step
    log_step = math.log(6.4) / 27.0
    mels = frequency / linear_step
    above = frequency >= min_log_hz
    mels[above] = min_log_mel + np.log(frequency[above] / min_log_hz) / log_step
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear_step = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / linear_step
    log_step = math.log(6.4) / 27.0
    frequency = mels * linear_step
    above = mels >= min_log_mel
    frequency[above] = min_log_hz * np.exp(log_step * (mels[above] - min_log_mel))
    return frequency


def mel_filterbank(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> torch.Tensor:
    """Triangular, area-normalised (Slaney) filters, shape (n_mels, n_fft // 2 + 1)."""
    fft_frequencies = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    top_mel = _hz_to_mel(np.array([sample_rate / 2.0]))[0]
    band_edges = _mel_to_hz(np.linspace(0.0, top_mel, n_mels + 2))
    widths = np.diff(band_edges)
    distance = band_edges[:, None] - fft_frequencies[None, :]
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (band_edges[2 : n_mels + 2] - band_edges[:n_mels]))[:, None]
    return torch.from_numpy(filters.astype(np.float32))


class LogMelExtractor:
    """Log-mel features for a whole recording: (n_mels, frames), float32, on `device`.

    The dynamic range is clamped to 8 (in log10 units) below the loudest frame of the
    recording, then scaled to roughly [-1, 1], as Whisper's training data was.
    """

    def __init__(self, n_mels: int, device: torch.device) -> None:
        self.n_mels = n_mels
        self.device = device
        self._filters = mel_filterbank(n_mels).to(device)
        self._window = torch.hann_window(N_FFT, periodic=True, device=device)

    def __call__(self, audio: np.ndarray | torch.Tensor) -> torch.Tensor:
        waveform = torch.as_tensor(audio, dtype=torch.float32).to(self.device)
        if waveform.ndim != 1:
            raise ValueError(f"expected mono audio (1-D), got shape {tuple(waveform.shape)}")
        # One hop of trailing silence, so the last samples get a full frame of their own.
        waveform = torch.nn.functional.pad(waveform, (0, HOP_LENGTH))
        spectrum = torch.stft(
            waveform,
            N_FFT,
            HOP_LENGTH,
            window=self._window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spectrum[..., :-1].abs() ** 2
        mel = self._filters @ power
        log_mel = torch.clamp(mel, min=1e-10).log10()
        log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
        return (log_mel + 4.0) / 4.0


def pad_or_trim_frames(features: torch.Tensor, frames: int = N_FRAMES_PER_CHUNK) -> torch.Tensor:
    """Exactly `frames` columns: cut, or pad with zeros (the normalised value of quiet audio)."""
    length = features.shape[-1]
    if length >= frames:
        return features[..., :frames]
    return torch.nn.functional.pad(features, (0, frames - length))
