"""Quality filter for generated text: each rejected output gets one reason, counted in the
manifest. Small generators echo their input, loop, stop mid-sentence at the token limit, open
with chat preambles ("Here's a suggested edit: ..."), talk about the rewriting instead of
rewriting ("The above paragraph is rephrased for clarity ..."), or drift away from their
source. `faithfulness` measures the last: the share of the output's content words that come
from its source chunk."""

import re
from typing import Optional, Tuple

WORD = re.compile(r"\w+")
CONTENT_WORD = re.compile(r"[^\W\d_]{4,}")  # words of 4+ letters: most function words drop out
PREAMBLES = (
    "here's",
    "here is",
    "sure",
    "certainly",
    "of course",
    "i'd be happy",
    "i can",
    "as an ai",
    "i'm sorry",
    "i am sorry",
    "note:",
)
_TEXT = r"(?:text|paragraph|passage|extract|excerpt|article|sentence|content|version|document)"
_SAYS = (
    r"(?:is|was|has been|discusses|describes|talks|explains|provides|highlights|mentions|"
    r"states|says?|suggests|emphasizes|focuses|means?|covers|requires|aims)\b"
)
# Talk about the text or the task instead of the text, anywhere in the output.
COMMENTARY = re.compile(
    "|".join(
        [
            r"\b(?:re-?phras|paraphras|rewrit|rewrot|re-?word)\w*",
            r"\b(?:the|this|that)\s+(?:above|original|given|following|previous|provided|source)\s+"
            + _TEXT,
            r"\b(?:the|this|a|an)\s+(?:\w+\s+)?" + _TEXT + r"\s+" + _SAYS,
            r"\bthis\s+answer\s+" + _SAYS,  # about the answer ("The answer is ..." is an answer)
            r"\bwikipedia\b",  # the style asked for, not the subject
            # questions and answers about the questions, not about the subject
            r"\bwhat(?:'s|\s+is|\s+does)\s+(?:a|the|this)\s+(?:question|answer|paragraph|text|passage)\b",
            r"\b(?:the|an)\s+answer\s+(?:to|for)\s+(?:this|the|that|the above)\s+question",
            r"\bwhat(?:'s|\s+is)\s+the\s+answer\b",
            r"\b(?:an|the)\s+answer\s+(?:could|would|will|should)\s+(?:include|be|contain)\b",
            r"\byou(?:'re|\s+are)\s+asked\b",
            r"\b(?:this|the above|the following)\s+question\b",
            r"\baccording to the " + _TEXT,
            r"\b(?:in|from)\s+(?:the|this)\s+" + _TEXT + r"\s*,",
            r"\bi\s+(?:have|'ve|had)\s+(?:\w+\s+)?(?:re\w+|made|used|added|removed|kept|tried|"
            r"changed|simplified|clarified|condensed|summari[sz]ed)\b",
            r"\b(?:to|for)\s+(?:improve|enhance)\s+(?:the\s+)?(?:clarity|readability|flow)\b",
            r"\b(?:the|this)\s+(?:revised|rewritten|improved|edited|updated|new)\s+" + _TEXT,
            r"(?:^|[.!?:]\s+)I\s+(?:made|added|used|changed|removed|kept|reorganized|replaced|"
            r"corrected|simplified|revised|tried|maintained)\b",
        ]
    ),
    re.IGNORECASE,
)


def _ngrams(words, n):
  return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


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


def commentary(text: str, source: str) -> Optional[str]:
  """The first phrase where the output talks about the text or the rewriting, unless the
  source itself says it (an article about paraphrasing may say 'paraphrase')."""
  src = source.lower()
  for m in COMMENTARY.finditer(text):
    if m.group(0).lower() not in src:
      return m.group(0)
  return None


def strip_commentary(text: str, source: str) -> str:
  """The output without leading and trailing lines that talk about the rewriting ("Here is
  the revised paragraph:", "I made changes to improve clarity ..."): small models often wrap a
  good rewrite in them. Commentary left in the middle is for `review` to catch."""
  lines = text.strip().split("\n")
  while lines and (not lines[0].strip() or commentary(lines[0], source)):
    lines.pop(0)
  while lines and (not lines[-1].strip() or commentary(lines[-1], source)):
    lines.pop()
  return "\n".join(lines)


def _stem(word: str) -> str:
  return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def faithfulness(text: str, source: str) -> float:
  """Share of the output's content words (4+ letters, plural 's' dropped) found in the
  source: 1 for a rewrite that only rearranges its source's words, near 0 for text about
  something else. 1 for an output without content words (the length checks handle those)."""
  out = [_stem(w) for w in CONTENT_WORD.findall(text.lower())]
  if not out:
    return 1.0
  src = {_stem(w) for w in CONTENT_WORD.findall(source.lower())}
  return sum(w in src for w in out) / len(out)


def review(
    text: str,
    source: str,
    finish: str,
    min_faithfulness: float = 0.0,
    must_match: Optional[str] = None,
) -> Tuple[str, Optional[str]]:
  """(the text to keep, None) or (the text, why it is dropped). Commentary wrapped around the
  text is cut off first; an output that was all commentary is dropped as such. `must_match`:
  a regular expression the kept text must match (a style's form, e.g. a question with an
  answer)."""
  stripped = text.strip()
  if finish in ("length", "context") and len(WORD.findall(stripped)) >= 3:
    return stripped, "truncated"
  cleaned = strip_commentary(stripped, source)
  if len(WORD.findall(cleaned)) < 3:
    return stripped, "commentary" if cleaned != stripped else "empty"
  if is_repetitive(cleaned):
    return cleaned, "repetitive"
  if echoes(cleaned, source):
    return cleaned, "echo"
  if cleaned.lower().startswith(PREAMBLES):
    return cleaned, "preamble"
  if commentary(cleaned, source):
    return cleaned, "commentary"
  if must_match and not re.search(must_match, cleaned):
    return cleaned, "malformed"
  if faithfulness(cleaned, source) < min_faithfulness:
    return cleaned, "unfaithful"
  return cleaned, None
