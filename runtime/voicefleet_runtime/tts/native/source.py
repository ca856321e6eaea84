"""The vocoder's harmonic source: F0 -> a sum of 9 harmonics at 24 kHz (silent where unvoiced)
-> its short-time spectrum (magnitude and phase), which the generator mixes in.

This export draws no random numbers: the reference's random initial phases and additive noise
are absent from the packaged graph, so the source is a pure function of F0, as here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from voicefleet_runtime.tts.model import SAMPLE_RATE
from voicefleet_runtime.tts.native.layers import Span
from voicefleet_runtime.tts.native.weights import KokoroWeights

HARMONICS = 9
SAMPLES_PER_CURVE_STEP = 300
"""Samples per F0 value (the F0 curve runs at twice the frame rate: 80 Hz)."""
SINE_AMPLITUDE = 0.1
VOICED_THRESHOLD = 10.0
"""F0 in Hz above which a sample is voiced."""
FFT_SIZE = 20
HOP = 5


def _stretch_linear(values: torch.Tensor, span: Span, factor: int) -> torch.Tensor:
    """Linear interpolation by `factor` with half-pixel centres, as F.interpolate does it, but
    clamped at each chunk's own last value: [B, C, n] -> [B, C, n * factor]."""
    steps = values.shape[-1] * factor
    position = (torch.arange(steps, device=values.device, dtype=torch.float32) + 0.5) / factor - 0.5
    position = position.clamp(min=0)
    low = position.floor()
    weight = (position - low).to(values.dtype)
    last = span.frames[:, None] - 1
    low_index = torch.minimum(low.long()[None, :], last)
    high_index = torch.minimum(low_index + 1, last)
    channels = values.shape[1]
    low_values = values.gather(2, low_index[:, None, :].expand(-1, channels, -1))
    high_values = values.gather(2, high_index[:, None, :].expand(-1, channels, -1))
    return low_values + (high_values - low_values) * weight


def _reflect_padded(signal: torch.Tensor, span: Span, pad: int) -> torch.Tensor:
    """Each chunk reflect-padded by `pad` at both of its own ends: [B, N] -> [B, N + 2 pad]."""
    index = torch.arange(signal.shape[-1] + 2 * pad, device=signal.device)[None, :] - pad
    last = span.frames[:, None] - 1
    index = index.abs()
    index = torch.where(index > last, 2 * last - index, index).clamp(min=0)
    index = torch.minimum(index, last)
    return signal.gather(1, index)


def _phase(real: torch.Tensor, imaginary: torch.Tensor) -> torch.Tensor:
    """atan2 exactly as the export computes it: atan(im / re), shifted by pi where re < 0
    (down by pi when im is not positive, so a negative real bin has phase -pi)."""
    safe_real = torch.where(real == 0, torch.full_like(real, 1e-30), real)
    angle = torch.atan(imaginary / safe_real)
    shifted = torch.where(imaginary > 0, angle + math.pi, angle - math.pi)
    return torch.where(real < 0, shifted, angle)


class HarmonicSource(nn.Module):
    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.merge = weights.linear("decoder.decoder.generator.m_source.l_linear")
        self.register_buffer("window", weights.tensor("stft.window"))
        harmonics = torch.arange(1, HARMONICS + 1, dtype=torch.float32)
        self.register_buffer("harmonics", harmonics[None, :, None])
        self.window: torch.Tensor
        self.harmonics: torch.Tensor

    def forward(self, f0: torch.Tensor, curve: Span, frames: Span) -> torch.Tensor:
        """F0 [B, 2T] (Hz) -> the source's spectrum [B, 22, 120T + 1]: 11 magnitudes, 11 phases,
        zero past each chunk's `frames`."""
        f0 = f0.float()
        # Phase advance per curve step, in turns (mod 1); the export upsamples F0 to samples and
        # averages it back down, which gives each step's own value.
        turns = f0[:, None, :] * self.harmonics / SAMPLE_RATE
        turns = turns - torch.floor(turns)
        phase = torch.cumsum(turns, dim=-1) * 2.0 * math.pi * SAMPLES_PER_CURVE_STEP
        phase = _stretch_linear(phase, curve, SAMPLES_PER_CURVE_STEP)
        voiced = torch.repeat_interleave(f0 > VOICED_THRESHOLD, SAMPLES_PER_CURVE_STEP, dim=-1)
        sines = torch.sin(phase) * SINE_AMPLITUDE * voiced[:, None, :].float()
        source = torch.tanh(self.merge(sines.transpose(1, 2)))[..., 0]
        padded = _reflect_padded(source, curve.scaled(SAMPLES_PER_CURVE_STEP), FFT_SIZE // 2)
        spectrum = torch.stft(
            padded,
            n_fft=FFT_SIZE,
            hop_length=HOP,
            win_length=FFT_SIZE,
            window=self.window,
            center=False,
            onesided=True,
            return_complex=True,
        )
        return frames.apply(self.polar(spectrum))

    def polar(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Complex bins [B, 11, F] -> magnitudes and phases [B, 22, F]."""
        real, imaginary = spectrum.real, spectrum.imag
        magnitude = torch.sqrt(real * real + imaginary * imaginary)
        return torch.cat([magnitude, _phase(real, imaginary)], dim=1)
