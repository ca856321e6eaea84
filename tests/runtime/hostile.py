"""What a hostile client sends, built in the test: decode bombs, slow and broken connections,
and a real `voicefleet serve` process to send them to (its memory and CPU read from /proc).

Imported as `tests.runtime.hostile`.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.loopback import free_port, serve_on_loopback

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BOUNDARY = "hostileboundary"


# --- decode bombs -----------------------------------------------------------------------------


def _crc_table(polynomial: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    table = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ polynomial) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return table


_CRC8 = _crc_table(0x07, 8)
_CRC16 = _crc_table(0x8005, 16)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _utf8_number(number: int) -> bytes:
    """FLAC's frame numbers: UTF-8's byte layout, extended to 36 bits."""
    if number < 0x80:
        return bytes([number])
    for length in range(2, 8):
        if number < 1 << (6 * (length - 1) + 7 - length):
            tail = []
            for _ in range(length - 1):
                tail.append(0x80 | (number & 0x3F))
                number >>= 6
            return bytes([((0xFF << (8 - length)) & 0xFF) | number, *reversed(tail)])
    raise ValueError("FLAC frame numbers have 36 bits")


def flac_bomb(sample_rate: int, channels: int, frames: int, total_samples: int = 0) -> bytes:
    """A valid FLAC whose frames are 65535-sample constant subframes: 13 bytes of mono say
    65535 samples, at whatever rate STREAMINFO declares (20 bits: up to 1048575 Hz)."""
    block = 65535
    info = (sample_rate << 44) | ((channels - 1) << 41) | (15 << 36) | total_samples
    streaminfo = struct.pack(">HH", block, block) + bytes(6) + info.to_bytes(8, "big") + bytes(16)
    out = [b"fLaC", bytes([0x80]), len(streaminfo).to_bytes(3, "big"), streaminfo]
    # Block size: 16 bits at the end of the header; rate: from STREAMINFO; 16-bit samples.
    head_start = bytes([0xFF, 0xF8, 0x70, ((channels - 1) << 4) | 0x08])
    subframes = b"\x00\x00\x01" * channels  # constant subframes, value 1
    for index in range(frames):
        head = head_start + _utf8_number(index) + struct.pack(">H", block - 1)
        frame = head + bytes([_crc8(head)]) + subframes
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)


FLAC_RATE_CODES = {
    8_000: 0x4,
    16_000: 0x5,
    22_050: 0x6,
    24_000: 0x7,
    32_000: 0x8,
    44_100: 0x9,
    48_000: 0xA,
    96_000: 0xB,
}
"""The sample rates a FLAC frame header can name itself (4 bits), overriding STREAMINFO's."""


def flac_changing_rate(rates: list[int], block: int = 4096) -> bytes:
    """A valid mono FLAC whose frames name their own sample rates, one frame per entry of
    `rates`: a stream that changes rate mid-stream (constant subframes, value 1)."""
    info = (rates[0] << 44) | (15 << 36)
    streaminfo = struct.pack(">HH", block, block) + bytes(6) + info.to_bytes(8, "big") + bytes(16)
    out = [b"fLaC", bytes([0x80]), len(streaminfo).to_bytes(3, "big"), streaminfo]
    for index, rate in enumerate(rates):
        head = bytes([0xFF, 0xF8, 0x70 | FLAC_RATE_CODES[rate], 0x08]) + _utf8_number(index)
        head += struct.pack(">H", block - 1)
        frame = head + bytes([_crc8(head)]) + b"\x00\x00\x01"
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)


def tone_mp3(seconds: float, rate: int = 16_000) -> bytes:
    """A real MP3 (LAME writes an Info header with the frame count)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        times = np.arange(int(seconds * rate)) / rate
        pcm = (np.sin(2 * np.pi * 440 * times) * 8000).astype(np.int16)[None, :]
        for start in range(0, pcm.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pcm[:, start : start + 1152]), format="s16p", layout="mono"
            )
            frame.sample_rate = rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def lying_mp3() -> bytes:
    """A 15 KB MP3 whose Info header claims two billion frames (days of audio)."""
    data = bytearray(tone_mp3(5.0))
    tag = max(data.find(b"Xing"), data.find(b"Info"))
    assert tag > 0, "LAME wrote no Info/Xing header"
    data[tag + 8 : tag + 12] = (0x7FFFFFFF).to_bytes(4, "big")
    return bytes(data)


def _pcm16k(path: Path, seconds: float | None = None) -> np.ndarray:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
        pcm = np.concatenate(
            [
                resampled.to_ndarray().reshape(-1)
                for frame in container.decode(audio=0)
                for resampled in resampler.resample(frame)
            ]
        )
    return pcm if seconds is None else pcm[: int(seconds * 16_000)]


def speech_wav(shared_audio: Path, rounds: int) -> bytes:
    """Honest speech, 48 s a round: the English part of multilingual.mp3, then jfk, the two
    diarization speakers and the hotwords clip. Different sentences in every window, so the
    decoder never falls back to higher temperatures on repeated text (jfk ten times does)."""
    round_pcm = np.concatenate(
        [
            _pcm16k(shared_audio / "multilingual.mp3", 28.0),
            _pcm16k(shared_audio / "jfk.flac"),
            _pcm16k(shared_audio / "stereo_diarization.wav"),
            _pcm16k(shared_audio / "hotwords.mp3"),
        ]
    )
    pcm = np.tile(round_pcm.astype("<i2"), rounds).tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


# --- raw connections ----------------------------------------------------------------------------


def multipart(fields: dict[str, str], audio: bytes, filename: str = "a.bin") -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + audio
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return b"".join(parts)


def request_head(port: int, path: str, body_length: int, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {body_length}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def answer_or_close(sock: socket.socket, timeout: float) -> bytes:
    """What the server sent before it closed (b"" if it just closed); fails if it did neither
    within `timeout`."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError as exc:
        raise AssertionError(f"the server kept the connection open for {timeout} s") from exc
    return received


# --- a real server process ----------------------------------------------------------------------


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    headers: dict[str, str]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def _status(self) -> dict[str, str]:
        lines = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def peak_rss_bytes(self) -> int:
        """VmHWM: the most resident memory the process ever had."""
        return int(self._status()["VmHWM"].split()[0]) * 1024

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def gauge(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def server_process(log_folder: Path, **settings: str) -> Iterator[ServerProcess]:
    """`voicefleet serve` with tiny.en on loopback; `settings` are VOICEFLEET_* values."""
    port = free_port()
    env = {
        **os.environ,
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_CPU_THREADS": "2",
        "VOICEFLEET_BEAM_SIZE": "1",
        **{f"VOICEFLEET_{name.upper()}": value for name, value in settings.items()},
    }
    key = settings.get("api_key")
    log = log_folder / f"server-{port}.log"
    with serve_on_loopback(port, env, log, "--model", "tiny.en") as process:
        yield ServerProcess(process, port, {"Authorization": f"Bearer {key}"} if key else {}, log)
