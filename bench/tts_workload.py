"""The TTS benchmarks' workload, defined once: the voice and the sentences they speak."""

from __future__ import annotations

VOICE = "af_heart"
TEXTS = (
    "The meeting starts at 9:30 in the main hall.",
    "Please bring your badge and a copy of the agenda.",
    "Lunch will be served on the second floor at noon.",
    "The train to the airport leaves every 15 minutes.",
    "Our quarterly revenue grew by 12% to $4.5 million.",
    "Dr. Brown will present the results of the study.",
    "Remember to save your work before the update starts.",
    "The library closes early on Fridays during the summer.",
)
