"""Quality filter for generated text: each rejected output gets one reason, counted in the
manifest. Small generators echo their input, loop, stop mid-sentence at the token limit, or
open with chat preambles ("Here's a suggested edit: ...")."""
import re
from typing import Optional

WORD = re.compile(r"\w+")
PREAMBLES = ("here's", "here is", "sure", "certainly", "of course", "i'd be happy", "i can",
             "as an ai", "i'm sorry", "i am sorry", "note:")


def _ngrams(words, n):
  return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def is_repetitive(text: str, min_words: int = 20, min_distinct: float = 0.5) -> bool:
  words = WORD.findall(text.lower())
  if len(words) < min_words:
    return False
  grams = _ngrams(words, 3)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  repeated_line = len(lines) >= 3 and len(set(lines)) <= len(lines) / 2
  return len(set(grams)) / len(grams) < min_distinct or repeated_line


def echoes(text: str, source: str, n: int = 5, max_copied: float = 0.8) -> bool:
  """Most of the output's word n-grams copied from the input: a copy, not a rewrite."""
  out = _ngrams(WORD.findall(text.lower()), n)
  if not out:
    return False
  src = set(_ngrams(WORD.findall(source.lower()), n))
  return sum(g in src for g in out) / len(out) >= max_copied


def rejection(text: str, source: str, finish: str) -> Optional[str]:
  """None to keep the output, else why it is dropped."""
  stripped = text.strip()
  if len(WORD.findall(stripped)) < 3:
    return "empty"
  if finish in ("length", "context"):
    return "truncated"
  if is_repetitive(stripped):
    return "repetitive"
  if echoes(stripped, source):
    return "echo"
  if stripped.lower().startswith(PREAMBLES):
    return "preamble"
  return None
