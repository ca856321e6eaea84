"""The iSTFTNet generator: the decoder's features plus the harmonic source's spectrum ->
upsampled x10 then x6 through AdaIN residual blocks with Snake activations -> magnitude and
phase of a 20-point STFT -> audio by inverse STFT (hop 5), 600 samples per frame."""

from __future__ import annotations

import torch
from torch import nn

from voicefleet_runtime.tts.native.layers import AdaIN, Span
from voicefleet_runtime.tts.native.source import FFT_SIZE, HOP, HarmonicSource
from voicefleet_runtime.tts.native.weights import KokoroWeights

PREFIX = "decoder.decoder.generator"
STAGES = 2
KERNELS_PER_STAGE = 3
PAIRS_PER_BLOCK = 3
BINS = FFT_SIZE // 2 + 1
ISTFT_GAIN = 4.0
"""The export's inverse STFT scales by n_fft / hop."""
TINY = 1.1754943508222875e-38
"""The export normalises only where the window sum exceeds the smallest normal float."""


class SnakeResidualBlock(nn.Module):
    """Three pairs of (AdaIN, Snake, dilated conv, AdaIN, Snake, conv), each pair residual."""

    def __init__(self, weights: KokoroWeights, name: str) -> None:
        super().__init__()
        pairs = range(PAIRS_PER_BLOCK)
        self.norms1 = nn.ModuleList(AdaIN(weights, f"{name}.adain1.{j}") for j in pairs)
        self.norms2 = nn.ModuleList(AdaIN(weights, f"{name}.adain2.{j}") for j in pairs)
        self.convs1 = nn.ModuleList(weights.conv(f"{name}.convs1.{j}") for j in pairs)
        self.convs2 = nn.ModuleList(weights.conv(f"{name}.convs2.{j}") for j in pairs)
        for index, j in enumerate(pairs):
            for which in (1, 2):
                alpha = weights.tensor(f"{name}.alpha{which}.{j}")
                self.register_buffer(f"alpha{which}_{index}", alpha)
                self.register_buffer(f"inverse{which}_{index}", 1.0 / alpha)

    def _snake(self, which: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        alpha: torch.Tensor = getattr(self, f"alpha{which}_{index}")
        inverse: torch.Tensor = getattr(self, f"inverse{which}_{index}")
        return alpha, inverse

    def forward(self, x: torch.Tensor, style: torch.Tensor, span: Span) -> torch.Tensor:
        for index in range(PAIRS_PER_BLOCK):
            step = self.norms1[index](x, style, span, self._snake(1, index))
            step = self.convs1[index](step)
            step = self.norms2[index](step, style, span, self._snake(2, index))
            x = x + self.convs2[index](step)
        return x


class Generator(nn.Module):
    def __init__(self, weights: KokoroWeights) -> None:
        super().__init__()
        self.source = HarmonicSource(weights)
        self.ups = nn.ModuleList(weights.conv(f"{PREFIX}.ups.{i}") for i in range(STAGES))
        self.noise_convs = nn.ModuleList(
            weights.conv(f"{PREFIX}.noise_convs.{i}") for i in range(STAGES)
        )
        self.noise_blocks = nn.ModuleList(
            SnakeResidualBlock(weights, f"{PREFIX}.noise_res.{i}") for i in range(STAGES)
        )
        self.blocks = nn.ModuleList(
            SnakeResidualBlock(weights, f"{PREFIX}.resblocks.{i}")
            for i in range(STAGES * KERNELS_PER_STAGE)
        )
        self.conv_post = weights.conv(f"{PREFIX}.conv_post")
        istft = f"{PREFIX}.stft.istft.stft"
        self.register_buffer("inverse_basis", weights.tensor(f"{istft}.inverse_basis"))
        self.register_buffer("window_sum", weights.tensor(f"{istft}.window_sum"))
        self.inverse_basis: torch.Tensor
        self.window_sum: torch.Tensor

    def keep_float32_parts(self) -> None:
        """Back to float32 after a cast to half precision: the harmonic source (its phases run
        to 1e5 radians, beyond float16) and the inverse STFT's tables."""
        self.source.float()
        self.inverse_basis = self.inverse_basis.float()
        self.window_sum = self.window_sum.float()

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, f0: torch.Tensor, curve: Span
    ) -> tuple[torch.Tensor, Span]:
        """Features [B, 512, 2T] and F0 [B, 2T] -> audio [B, 600T] and its span."""
        stage_spans = (curve.scaled(10), curve.scaled(60, extra=1))
        harmonic = self.source(f0, curve, stage_spans[1]).to(x.dtype)
        for stage, span in enumerate(stage_spans):
            previous = curve if stage == 0 else stage_spans[0]
            x = previous.apply(nn.functional.leaky_relu(x, 0.1))
            x = self.ups[stage](x)
            if stage == STAGES - 1:
                x = nn.functional.pad(x, (1, 0), mode="reflect")
            source = self.noise_blocks[stage](self.noise_convs[stage](harmonic), style, span)
            x = x + source
            blocks = self.blocks[stage * KERNELS_PER_STAGE : (stage + 1) * KERNELS_PER_STAGE]
            total = blocks[0](x, style, span)
            for block in blocks[1:]:
                total = total + block(x, style, span)
            x = total / KERNELS_PER_STAGE
        spans = stage_spans[1]
        x = self.conv_post(spans.apply(nn.functional.leaky_relu(x, 0.01)))
        # In float32: exp() of a log-magnitude overflows float16.
        return self._inverse_stft(x.float(), spans), curve.scaled(HOP * 60)

    def _inverse_stft(self, x: torch.Tensor, frames: Span) -> torch.Tensor:
        magnitude = torch.exp(x[:, :BINS]) * frames.mask.float()
        phase = torch.sin(x[:, BINS:])
        spectrum = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=1)
        audio = nn.functional.conv_transpose1d(spectrum, self.inverse_basis, stride=HOP)[:, 0]
        # The export divides only the first window's samples by the window sum (the length it
        # was traced with); everything else is left as it is. Kept, to sound the same.
        head = audio[:, :FFT_SIZE]
        normalised = torch.where(self.window_sum > TINY, head / self.window_sum, head)
        audio = torch.cat([normalised, audio[:, FFT_SIZE:]], dim=1) * ISTFT_GAIN
        return audio[:, FFT_SIZE // 2 : -(FFT_SIZE // 2)]
