"""Text before the model: normalisation and chunking, on their own (no model needed)."""

from __future__ import annotations

import pytest

from voicefleet_runtime.tts.chunking import plan_chunks, split_sentences
from voicefleet_runtime.tts.normalize import normalize_text
from voicefleet_runtime.tts.vocab import MAX_PHONEMES


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("at 9:30", "at nine thirty"),
        ("at 7:05 pm", "at seven oh five P.M."),
        ("at 10:00", "at ten o'clock"),
        ("$12.50", "twelve dollars and fifty cents"),
        ("$1", "one dollar"),
        ("€3 million", "three million euros"),
        ("£2.01", "two pounds and one penny"),
        ("50%", "fifty percent"),
        ("1,234", "one thousand, two hundred and thirty-four"),
        ("3.14", "three point one four"),
        ("in 1999", "in nineteen ninety-nine"),
        ("the 21st", "the twenty-first"),
        ("5 km", "five kilometers"),
        ("Dr. Who", "Doctor Who"),
        ("St. Louis on Main St.", "Saint Louis on Main Street"),
        ("apples, pears etc. Then", "apples, pears et cetera. Then"),
        ("No. 9", "number nine"),
        ("R&D", "R and D"),
        ("你好。Hello！", ". Hello!"),
    ],
)
def test_normalize(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


def test_sentences_split_at_english_and_chinese_punctuation() -> None:
    text = normalize_text("First one. Second one！Third one？Fourth at 9 A.M. sharp; fifth\nsixth")
    assert split_sentences(text) == [
        "First one.",
        "Second one!",
        "Third one?",
        "Fourth at nine A.M. sharp;",
        "fifth",
        "sixth",
    ]


def test_first_chunk_is_the_first_sentence_and_short_ones_are_joined() -> None:
    def letters(sentence: str) -> list[str]:
        return [sentence.lower()]

    chunks = list(plan_chunks("Hello there. Hi. Ok. A longer closing sentence.", letters))
    assert [chunk.phonemes for chunk in chunks] == [
        "hello there.",
        "hi. ok. a longer closing sentence.",
    ]


def test_a_sentence_longer_than_the_window_is_cut_into_chunks() -> None:
    """The real G2P's chunker cuts at punctuation first; nothing exceeds Kokoro's window."""
    from voicefleet_runtime.tts.g2p import EnglishG2P

    sentence = ", ".join(["the quick brown fox jumps over the lazy dog"] * 30) + "."
    chunks = list(plan_chunks(sentence, EnglishG2P().phonemes))
    assert len(chunks) > 1
    assert all(len(chunk.phonemes) <= MAX_PHONEMES for chunk in chunks)


def test_unknown_words_are_phonemised_without_changing_numpys_threads() -> None:
    """The neural fallback runs on one BLAS thread (g2p.py says why) and gives the process's
    own setting back afterwards."""
    from threadpoolctl import ThreadpoolController

    from voicefleet_runtime.tts.g2p import EnglishG2P

    def blas_threads() -> list[int]:
        return [
            int(lib["num_threads"])
            for lib in ThreadpoolController().info()
            if lib["user_api"] == "blas"
        ]

    g2p = EnglishG2P()
    before = blas_threads()
    assert before, "numpy's BLAS is loaded once the G2P is"
    (phonemes,) = g2p.phonemes("Zorblax met Kwazulu.")
    assert len(phonemes.split()) == 3, phonemes
    assert blas_threads() == before
