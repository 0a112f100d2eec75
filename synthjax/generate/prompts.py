"""Prompt styles (versioned, editable JSON templates), chat formats and chunking.

A template file holds {"style", "version", "system", "user" (with {text}), "prefill"} and
optionally "keep_prefill", "min_faithfulness" (the share of an output's content words that
must come from its source chunk, filters.py) and "must_match" (a regular expression a kept
output matches: the style's form). The prefill opens the assistant turn
("Paraphrased paragraph:") so that small instruct models write in the asked style at once
instead of commenting on the request.
"""

import json
import os
import re
from typing import Callable, List

from synthjax.errors import UserError

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
STYLES = ("hq", "qa", "easy", "hard", "textbook")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def load_template(style_or_path: str) -> dict:
  path = (
      style_or_path
      if style_or_path.endswith(".json")
      else os.path.join(TEMPLATES, f"{style_or_path}.json")
  )
  if not os.path.exists(path):
    raise UserError(
        f"unknown style {style_or_path!r}: no template {path} (styles: "
        f"{', '.join(STYLES)}, or a path to your own .json template)"
    )
  try:
    with open(path) as f:
      t = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: invalid JSON ({e.msg})") from None
  for field in ("style", "version", "user", "prefill"):
    if field not in t:
      raise UserError(f"{path}: template is missing field {field!r}")
  if "{text}" not in t["user"]:
    raise UserError(f"{path}: field 'user' has no {{text}} placeholder")
  t.setdefault("system", "")
  floor = t.get("min_faithfulness", 0.0)
  if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
    raise UserError(f"{path}: min_faithfulness must be a share in [0, 1], got {floor!r}")
  if "must_match" in t:
    try:
      re.compile(t["must_match"])
    except (re.error, TypeError) as e:
      raise UserError(f"{path}: must_match is not a regular expression ({e})") from None
  return t


def chat_format(chat_template: str) -> str:
  """Which instruct format a tokenizer's chat template uses."""
  if "<|im_start|>" in chat_template:
    return "chatml"
  if "<|start_header_id|>" in chat_template:
    return "llama3"
  raise UserError("the generator's chat template is neither ChatML nor Llama-3")


def render(template: dict, text: str, fmt: str) -> str:
  """The prompt string: system and user turns, then the opened assistant turn + prefill."""
  user = template["user"].replace("{text}", text)
  if fmt == "chatml":
    system = f"<|im_start|>system\n{template['system']}<|im_end|>\n" if template["system"] else ""
    return (
        f"{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        f"{template['prefill']}"
    )
  if fmt == "llama3":
    system = (
        f"<|start_header_id|>system<|end_header_id|>\n\n{template['system']}<|eot_id|>"
        if template["system"]
        else ""
    )
    return (
        f"<|begin_of_text|>{system}<|start_header_id|>user<|end_header_id|>\n\n{user}"
        f"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{template['prefill']}"
    )
  raise UserError(f"unknown chat format {fmt!r}")


def chunk(text: str, max_tokens: int, count: Callable[[str], int]) -> List[str]:
  """Split at sentence ends into pieces of at most max_tokens (WRAP used about 300: longer
  chunks lose content when rephrased); a sentence longer than that is cut by words."""
  pieces, current = [], ""
  for sentence in _SENTENCE.split(" ".join(text.split())):
    if not sentence:
      continue
    candidate = f"{current} {sentence}".strip()
    if len(candidate.split()) <= max_tokens and count(candidate) <= max_tokens:
      current = candidate
      continue
    if current:
      pieces.append(current)
    current = ""
    words, start = sentence.split(), 0
    while start < len(words):  # the sentence alone is too long: take as many words as fit
      take = len(words) - start
      while take > max(1, max_tokens):  # every word is a token at least: no need to count
        take = take * 3 // 4
      while take > 1 and count(" ".join(words[start : start + take])) > max_tokens:
        take = max(1, take * 3 // 4)
      piece = " ".join(words[start : start + take])
      start += take
      if start < len(words):
        pieces.append(piece)
      else:
        current = piece
  if current:
    pieces.append(current)
  return pieces
