"""Text normalisation before G2P: say numbers, times, money, units and abbreviations as words.

The G2P reads words; left alone it drops "9:30", and the periods in "$12.50", "Dr." or
"Jan." would end sentences early. The output also keys the result cache, so two spellings
of the same words share an entry. Number words come from sanotts (MIT), which reimplements
the num2words forms misaki uses without num2words' LGPL.

English only: letters outside the Latin script are dropped, and Chinese/Japanese sentence
punctuation becomes its English equivalent so chunking still sees the sentences.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from sanotts.nano_g2p import cardinal_words, decimal_words, ordinal_words, year_words

WIDE_PUNCTUATION = str.maketrans(
    {
        "。": ". ",
        "！": "! ",
        "？": "? ",
        "；": "; ",
        "：": ": ",
        "，": ", ",
        "、": ", ",
        "…": "... ",
    }
)
QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": " - "})

ABBREVIATIONS = {
    "Mr.": "Mister",
    "Mrs.": "Missus",
    "Ms.": "Miz",
    "Dr.": "Doctor",
    "Prof.": "Professor",
    "Jr.": "Junior",
    "Sr.": "Senior",
    "Capt.": "Captain",
    "Gen.": "General",
    "Gov.": "Governor",
    "Lt.": "Lieutenant",
    "Sgt.": "Sergeant",
    "Col.": "Colonel",
    "Mt.": "Mount",
    "Ave.": "Avenue",
    "Rd.": "Road",
    "Blvd.": "Boulevard",
    "Dept.": "Department",
    "Inc.": "Incorporated",
    "Ltd.": "Limited",
    "Corp.": "Corporation",
    "Co.": "Company",
    "vs.": "versus",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "approx.": "approximately",
    "Jan.": "January",
    "Feb.": "February",
    "Mar.": "March",
    "Apr.": "April",
    "Jun.": "June",
    "Jul.": "July",
    "Aug.": "August",
    "Sep.": "September",
    "Sept.": "September",
    "Oct.": "October",
    "Nov.": "November",
    "Dec.": "December",
    "Mon.": "Monday",
    "Tue.": "Tuesday",
    "Wed.": "Wednesday",
    "Thu.": "Thursday",
    "Fri.": "Friday",
    "Sat.": "Saturday",
    "Sun.": "Sunday",
}
SENTENCE_ENDING_ABBREVIATIONS = frozenset({"etc.", "Inc.", "Ltd.", "Co.", "Corp.", "Jr.", "Sr."})
"""These often end a sentence; their period is kept when the next word starts a new one."""

UNITS = {
    "km": "kilometers",
    "kg": "kilograms",
    "cm": "centimeters",
    "mm": "millimeters",
    "mph": "miles per hour",
    "km/h": "kilometers per hour",
    "lb": "pounds",
    "lbs": "pounds",
    "GB": "gigabytes",
    "MB": "megabytes",
    "ms": "milliseconds",
}
CURRENCIES = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent")}
SCALES = ("thousand", "million", "billion", "trillion")
LONGEST_SPOKEN_NUMBER = 15
"""Digit runs longer than this (IDs, card numbers) are read digit by digit."""

_ABBREVIATION = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(key) for key in ABBREVIATIONS) + r")(?=\s|$|[,;:!?])"
)
_SAINT_OR_STREET = re.compile(r"(?<![\w.])St\.(?=\s|$|[,;:!?])(\s+(?=[A-Z]))?")
_NUMBER_SIGN = re.compile(r"(?<![\w.])No\.\s*(?=\d)")
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?(?:\s*([AaPp])\.?\s?[Mm]\b\.?)?")
_MONEY = re.compile(
    r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?:\s?(" + "|".join(SCALES) + r")\b)?"
)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b")
_UNIT = re.compile(
    r"(\d)\s?("
    + "|".join(re.escape(unit) for unit in sorted(UNITS, key=len, reverse=True))
    + r")(?![\w/])"
)
_YEAR = re.compile(r"(?<![\d,.$£€])\b(1[1-9]\d\d|20\d\d)\b(?![\d,]|\.\d)")
_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)\b")
_GROUPED = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_INTEGER = re.compile(r"\d+")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_AROUND_NEWLINES = re.compile(r" *\n[\s]*")


def _spoken_integer(digits: str) -> str:
    if len(digits) > LONGEST_SPOKEN_NUMBER:
        return " ".join(str(cardinal_words(int(digit))) for digit in digits)
    return str(cardinal_words(int(digits)))


def _time(match: re.Match[str]) -> str:
    hour, minute, meridiem = int(match[1]), int(match[2]), match[3]
    words = [cardinal_words(hour)]
    if minute == 0 and meridiem is None:
        words.append("o'clock")
    elif 0 < minute < 10:
        words.append(f"oh {cardinal_words(minute)}")
    elif minute:
        words.append(cardinal_words(minute))
    if meridiem is not None:
        words.append(f"{meridiem.upper()}.M.")
    return " ".join(words)


def _money(match: re.Match[str]) -> str:
    unit, subunit = CURRENCIES[match[1]]
    whole = match[2].replace(",", "")
    cents, scale = match[3], match[4]
    if scale is not None:
        amount = decimal_words(f"{whole}.{cents}") if cents else _spoken_integer(whole)
        return f"{amount} {scale} {unit}s"
    words = f"{_spoken_integer(whole)} {unit}{'' if int(whole) == 1 else 's'}"
    if cents and int(cents.ljust(2, "0")):
        value = int(cents.ljust(2, "0"))
        plural = subunit if value == 1 else ("pence" if subunit == "penny" else f"{subunit}s")
        words += f" and {cardinal_words(value)} {plural}"
    return words


def _abbreviation(match: re.Match[str]) -> str:
    word = ABBREVIATIONS[match[1]]
    rest = match.string[match.end() :]
    ends_sentence = not rest.strip() or re.match(r"\s+[A-Z]", rest) is not None
    if match[1] in SENTENCE_ENDING_ABBREVIATIONS and ends_sentence:
        return word + "."
    return word


def _saint_or_street(match: re.Match[str]) -> str:
    return "Saint " if match[1] else "Street"


REWRITES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (_NUMBER_SIGN, lambda _: "number "),
    (_SAINT_OR_STREET, _saint_or_street),
    (_ABBREVIATION, _abbreviation),
    (_TIME, _time),
    (_MONEY, _money),
    (_PERCENT, lambda m: f"{m[1]} percent"),
    (_ORDINAL, lambda m: ordinal_words(int(m[1]))),
    (_UNIT, lambda m: f"{m[1]} {UNITS[m[2]]}"),
    (_YEAR, lambda m: year_words(int(m[1]))),
    (_DECIMAL, lambda m: decimal_words(m[0])),
    (_GROUPED, lambda m: _spoken_integer(m[0].replace(",", ""))),
    (_INTEGER, lambda m: _spoken_integer(m[0])),
)


def _speakable(character: str) -> bool:
    """Latin letters, digits, punctuation and spaces: what the English G2P can read."""
    if character.isascii() or character.isspace():
        return True
    category = unicodedata.category(character)
    if category.startswith("L"):
        return "LATIN" in unicodedata.name(character, "")
    return category.startswith(("P", "N", "S"))


def normalize_text(text: str) -> str:
    """The words a reader would say, one space between words, newlines kept as breaks."""
    text = unicodedata.normalize("NFKC", text.translate(WIDE_PUNCTUATION)).translate(QUOTES)
    text = "".join(character if _speakable(character) else " " for character in text)
    text = text.replace("&", " and ")
    for pattern, rewrite in REWRITES:
        text = pattern.sub(rewrite, text)
    text = _SPACES.sub(" ", text)
    return _AROUND_NEWLINES.sub("\n", text).strip()
