"""Distribution and collapse diagnostics between a natural and a synthetic corpus.

Words are lowercased \\w+ runs. Divergences use add-one smoothing over the union vocabulary so
they stay finite when one corpus lacks a word the other has.
"""

import collections
import math
import re
import zlib
from typing import Dict, Iterable, List

WORD = re.compile(r"\w+")


def words(texts: Iterable[str]) -> List[List[str]]:
  return [WORD.findall(t.lower()) for t in texts]


def _ngrams(docs: List[List[str]], n: int) -> collections.Counter:
  c: collections.Counter = collections.Counter()
  for d in docs:
    c.update(tuple(d[i : i + n]) for i in range(len(d) - n + 1))
  return c


def kl_divergence(p_counts: collections.Counter, q_counts: collections.Counter) -> float:
  """KL(P || Q) in nats with add-one smoothing over the union of both supports."""
  support = set(p_counts) | set(q_counts)
  p_total = sum(p_counts.values()) + len(support)
  q_total = sum(q_counts.values()) + len(support)
  return sum(
      ((p_counts[k] + 1) / p_total)
      * math.log(((p_counts[k] + 1) / p_total) / ((q_counts[k] + 1) / q_total))
      for k in support
  )


def distinct_n(docs: List[List[str]], n: int) -> float:
  grams = _ngrams(docs, n)
  total = sum(grams.values())
  return len(grams) / total if total else 0.0


def compression_ratio(texts: Iterable[str]) -> float:
  """Compressed / raw bytes: lower means more repetitive text."""
  raw = "\n".join(texts).encode()
  return len(zlib.compress(raw, 9)) / max(len(raw), 1)


def corpus_stats(texts: List[str]) -> Dict[str, float]:
  docs = words(texts)
  unigrams = _ngrams(docs, 1)
  tokens = sum(unigrams.values())
  return {
      "documents": len(texts),
      "words": tokens,
      "type_token_ratio": len(unigrams) / tokens if tokens else 0.0,
      "distinct_1": distinct_n(docs, 1),
      "distinct_2": distinct_n(docs, 2),
      "distinct_3": distinct_n(docs, 3),
      "compression_ratio": compression_ratio(texts),
  }


def compare(natural: List[str], synthetic: List[str], n_novel: int = 3) -> Dict[str, float]:
  """Synthetic corpus against natural: divergences, coverage, novelty, and both corpora's stats."""
  nat_docs, syn_docs = words(natural), words(synthetic)
  nat1, syn1 = _ngrams(nat_docs, 1), _ngrams(syn_docs, 1)
  nat2, syn2 = _ngrams(nat_docs, 2), _ngrams(syn_docs, 2)
  natn, synn = _ngrams(nat_docs, n_novel), _ngrams(syn_docs, n_novel)
  syn_total = sum(synn.values())
  return {
      "unigram_kl_syn_nat": kl_divergence(syn1, nat1),
      "bigram_kl_syn_nat": kl_divergence(syn2, nat2),
      "vocab_coverage": len(set(syn1) & set(nat1)) / max(len(nat1), 1),
      f"novel_{n_novel}gram_share": (
          sum(c for g, c in synn.items() if g not in natn) / syn_total if syn_total else 0.0
      ),
      **{f"natural/{k}": v for k, v in corpus_stats(natural).items()},
      **{f"synthetic/{k}": v for k, v in corpus_stats(synthetic).items()},
  }
