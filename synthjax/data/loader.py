"""The training loader: exact token shares, packed rows, host shards, a one-integer state.

A run with budget D and shares r_i draws exactly r_i * D tokens from component i: its
documents in a seeded random order, each seen once (unless repetition is allowed), the last one
cut to fit. The components' documents are interleaved by where they fall in their own stream,
so every stretch of training sees the shares, and the result is one token stream. Row r of the
stream is tokens [r T, r T + T + 1): inputs are the first T, targets the last T. Global batch b
is rows [b B, (b + 1) B) and host h of H reads its contiguous B / H of them.

Batches carry "inputs", "targets", "weights", "segment_ids" and "positions" (segment ids
restart per document within a row when `segment_ids=True`, else one segment per row) and
"source_ids" (index of the component each input token came from).
The iterator is a Grain MapDataset over batch indices; its state is {"next_index": b}.
"""

import math
from typing import Dict, List, Optional, Sequence, Union

import gin
import grain
import numpy as np

from synthjax import quiet

quiet.import_tensorflow()  # seqio loads it: its start-up lines stay out of a binary's output
import seqio

from synthjax.data import tasks as tasks_lib
from synthjax.data import token_cache
from synthjax.data.plan import plan_segments
from synthjax.errors import UserError


class TokenStream:
  """The planned stream (plan.py): segments (component, document, length) in stream order
  and their offsets: 14 bytes a segment, besides the components' lengths (4 bytes a document).

  tasks: the components' data (TokenizedTask: `name`, `lengths`, `tokens(i)`), in the order of
  `shares`."""

  def __init__(
      self,
      tasks: Sequence,
      shares: Sequence[float],
      total_tokens: int,
      seed: int,
      allow_repeat: Union[bool, Sequence[str]] = False,
  ):
    self.tasks = list(tasks)
    self.names = [t.name for t in self.tasks]
    need, self.repeats = plan_needs(
        {t.name: s for t, s in zip(self.tasks, shares)},
        total_tokens,
        {t.name: int(t.lengths.sum(dtype=np.int64)) for t in self.tasks},
        allow_repeat,
    )
    self.comp, self.doc, length = plan_segments([t.lengths for t in self.tasks], need, seed)
    self.offsets = np.zeros(len(length) + 1, np.int64)  # segment i: [offsets[i], offsets[i+1])
    np.cumsum(length, out=self.offsets[1:])
    del length
    self.total = int(self.offsets[-1])

  def read(self, start: int, count: int):
    """Tokens [start, start + count) with their component, segment (numbered from 1) and
    position in their document; each component's documents are read in one call."""
    stop = start + count
    first = int(np.searchsorted(self.offsets, start, side="right")) - 1
    seg = np.arange(first, int(np.searchsorted(self.offsets, stop, side="left")))
    begin = np.maximum(self.offsets[seg], start) - self.offsets[seg]  # within the document
    end = np.minimum(self.offsets[seg + 1], stop) - self.offsets[seg]
    comp, doc = self.comp[seg], self.doc[seg]
    pieces: List[np.ndarray] = [np.empty(0)] * len(seg)
    for c in np.unique(comp):
      at = np.flatnonzero(comp == c)
      for k, part in zip(at, self.tasks[c].read(doc[at], begin[at], end[at])):
        pieces[k] = part
    take = end - begin
    tokens = np.concatenate(pieces)
    pos = np.arange(len(tokens)) + np.repeat(begin - (np.cumsum(take) - take), take)
    return tokens, np.repeat(comp, take), np.repeat(np.arange(1, len(seg) + 1), take), pos


def plan_needs(
    shares: Dict[str, float],
    total_tokens: int,
    available: Dict[str, int],
    allow_repeat: Union[bool, Sequence[str]] = False,
):
  """Tokens each component contributes (exact shares of total_tokens) and the passes over its
  documents that takes; an error when one needs more than it holds and may not repeat."""
  need = _split_exactly(total_tokens, list(shares.values()))
  repeats = {}  # component -> passes over its documents (> 1: repeated)
  for (name, share), n_need in zip(shares.items(), need):
    if n_need == 0:
      continue
    repeats[name] = n_need / available[name]
    may_repeat = allow_repeat if isinstance(allow_repeat, bool) else name in allow_repeat
    if n_need > available[name] and not may_repeat:
      raise UserError(
          f"task {name!r} has {available[name]} unique tokens, but this budget "
          f"needs {n_need} from it (share {share:.3g} of {total_tokens}); lower "
          "the budget or allow repetition"
      )
  return need, repeats


def _split_exactly(total: int, shares: List[float]) -> List[int]:
  """Integer token counts proportional to shares that add up to exactly `total`."""
  raw = [total * s for s in shares]
  counts = [int(math.floor(x)) for x in raw]
  for i in np.argsort([c - x for c, x in zip(counts, raw)])[: total - sum(counts)]:
    counts[i] += 1
  return counts


def check_budget(
    mixture: str,
    budget: int,
    batch_size: int,
    seq_len: int,
    allow_repeat: Union[bool, Sequence[str]] = False,
) -> int:
  """From the tokenized copies' manifests alone (no document is read): each component of the
  mixture holds the tokens its share of the budget needs, or may repeat. What MixtureLoader,
  the train binary's --dry_run and a study check before any training. Returns the tokens the
  run's stream holds (whole batches, plus the last target)."""
  shares = tasks_lib.get_components(mixture)
  total = math.ceil(budget / (batch_size * seq_len)) * batch_size * seq_len + 1
  plan_needs(shares, total, {n: token_cache.stats(n)["tokens"] for n in shares}, allow_repeat)
  return total


@gin.configurable
class MixtureLoader:
  """The trainer's data source for a seqio task or mixture name at a token budget.

  allow_repeat: True, or the names of the components that may be read more than once when
  the budget needs more of them than they hold (e.g. small generated sets); `repeats` says
  how many passes each component took, for the run record."""

  def __init__(
      self,
      batch_size: int,
      seq_len: int,
      mixture: str = gin.REQUIRED,
      budget: int = gin.REQUIRED,
      seed: int = 0,
      segment_ids: bool = True,
      allow_repeat: Union[bool, Sequence[str]] = False,
      process_index: int = 0,
      process_count: int = 1,
      threads: int = 2,
      register=None,
  ):
    if register is not None:  # e.g. @register_study_data: a launched job registers its tasks
      register()
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
      raise UserError(f"MixtureLoader.budget must be a positive number of tokens, got {budget!r}")
    if isinstance(allow_repeat, str) or not isinstance(allow_repeat, (bool, list, tuple)):
      raise UserError(
          f"MixtureLoader.allow_repeat must be True, False or a list of task "
          f"names, got {allow_repeat!r}"
      )
    if not isinstance(segment_ids, bool):
      raise UserError(f"MixtureLoader.segment_ids must be True or False, got {segment_ids!r}")
    if batch_size % process_count:
      raise UserError(f"batch size {batch_size} is not divisible by {process_count} hosts")
    self.shares = tasks_lib.get_components(mixture)
    self.mixture = mixture
    # what the losses are measured in: runs of other vocabularies are not comparable
    self.vocabulary = token_cache.vocabulary_info(
        seqio.get_mixture_or_task(next(iter(self.shares)))
    )["sha256"]
    self.batch_size, self.seq_len, self.segment_ids = batch_size, seq_len, segment_ids
    self.local = batch_size // process_count
    self.offset = process_index * self.local
    self.steps = math.ceil(budget / (batch_size * seq_len))
    total = check_budget(mixture, budget, batch_size, seq_len, allow_repeat)
    self.stream = TokenStream(
        [token_cache.TokenizedTask(n) for n in self.shares],
        list(self.shares.values()),
        total,
        seed,
        allow_repeat,
    )
    self.repeats = self.stream.repeats
    dataset = grain.MapDataset.range(self.steps).map(self._batch)
    self._iter = iter(
        dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4))
    )

  def _batch(self, b: int) -> Dict[str, np.ndarray]:
    """This host's rows of global batch b: one read of the stretch they cover."""
    T = self.seq_len
    first_row = b * self.batch_size + self.offset
    stretch = self.stream.read(first_row * T, self.local * T + 1)
    rows = np.arange(self.local)[:, None] * T + np.arange(T + 1)[None]  # row r: [rT, rT + T]
    tokens, comps, segs, pos = (x[rows].astype(np.int32) for x in stretch)
    if self.segment_ids:
      segs = segs - segs[:, :1] + 1  # numbered from 1 in each row
    else:
      segs, pos = np.ones_like(segs), np.broadcast_to(np.arange(T + 1, dtype=np.int32), segs.shape)
    batch = {
        "inputs": tokens[:, :T],
        "targets": tokens[:, 1:],
        "weights": np.ones_like(tokens[:, :T]),
        "segment_ids": segs[:, :T],
        "positions": pos[:, :T],
        "source_ids": comps[:, :T],
    }
    return {k: np.ascontiguousarray(v) for k, v in batch.items()}

  def next_batch(self) -> Dict[str, np.ndarray]:
    try:
      return next(self._iter)
    except StopIteration:
      raise UserError(
          f"mixture {self.mixture!r}: the {self.steps} planned batches are used up"
      ) from None

  def get_state(self) -> dict:
    return dict(self._iter.get_state())

  def set_state(self, state: dict) -> None:
    self._iter.set_state(state)


@gin.configurable
class EvalSet:
  """A validation domain: the same evaluation tokens for every run, whatever its batch size.

  Documents are taken in a seeded random order (not file order) until `max_tokens` targets
  are reached (the last document cut), packed into rows of seq_len with segment ids and
  positions restarting per document, and grouped `batch_size` rows to an evaluation step.
  Every target token is attributed to its document, so the loss can be resampled by document
  (analyze/noise.py). `baseline_task` adds the unigram loss of these targets under that task's
  token frequencies (add-one smoothed): what a model that learned only frequencies scores.
  """

  def __init__(
      self,
      seq_len: int,
      task: str = gin.REQUIRED,
      max_tokens: int = 16384,
      seed: int = 0,
      batch_size: int = 16,
      baseline_task: Optional[str] = None,
      process_index: int = 0,
      process_count: int = 1,
  ):
    if batch_size % process_count:
      raise UserError(f"EvalSet.batch_size {batch_size} is not divisible by {process_count} hosts")
    data = token_cache.TokenizedTask(task)
    order = np.random.default_rng(seed).permutation(len(data))
    # max_tokens targets need max_tokens + 1 tokens: the documents of that order up to there
    last = int(np.searchsorted(np.cumsum(data.lengths[order], dtype=np.int64), max_tokens + 1))
    docs = data.read(order[: last + 1])
    docs[-1] = docs[-1][: max_tokens + 1 - sum(len(d) for d in docs[:-1])]
    self.documents = len(docs)
    stream = np.concatenate(docs).astype(np.int64)
    doc_of = np.concatenate([np.full(len(t), i) for i, t in enumerate(docs)])
    pos = np.concatenate([np.arange(len(t)) for t in docs])
    targets = len(stream) - 1
    rows = -(-targets // seq_len)
    pad = rows * seq_len + 1 - len(stream)
    stream, doc_of, pos = (
        np.concatenate([x, np.zeros(pad, x.dtype)]) for x in (stream, doc_of, pos)
    )
    idx = np.arange(rows)[:, None] * seq_len + np.arange(seq_len)[None]
    weights = (idx + 1 < len(stream) - pad).astype(np.int32)
    self.rows = {
        "inputs": stream[idx],
        "targets": stream[idx + 1],
        "weights": weights,
        "segment_ids": doc_of[idx] + 1,
        "positions": pos[idx],
    }
    self.doc_ids = np.where(weights > 0, doc_of[idx + 1], -1)  # the document of each target
    self.tokens = int(weights.sum())
    vocab = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary
    self.bytes = sum(len(vocab.decode([int(t) for t in d if t > 1]).encode("utf-8")) for d in docs)
    self.unigram_loss = None
    if baseline_task:
      counts = unigram_counts(baseline_task, vocab.vocab_size)
      logp = np.log((counts + 1) / (counts.sum() + len(counts)))
      self.unigram_loss = float(-logp[self.rows["targets"][weights > 0]].mean())
    self.batch_size = batch_size
    self.local = batch_size // process_count
    self.offset = process_index * self.local

  def eval_batches(self):
    """[(this host's batch, the global batch's document id per target, -1 for padding)]."""
    out = []
    n = len(self.doc_ids)
    for start in range(0, n, self.batch_size):
      rows = np.arange(start, start + self.batch_size)
      real = rows < n
      take = np.where(real, rows, 0)
      glob = {k: np.where(real[:, None], v[take], 0).astype(np.int32) for k, v in self.rows.items()}
      doc_ids = np.where(real[:, None], self.doc_ids[take], -1)
      local = {k: v[self.offset : self.offset + self.local] for k, v in glob.items()}
      out.append((local, doc_ids))
    return out


_UNIGRAM_COUNTS: Dict[tuple, np.ndarray] = {}


def unigram_counts(task: str, vocab_size: int) -> np.ndarray:
  """Token counts over a task's whole tokenized copy, kept per copy (its folder's name is the
  task's fingerprint, so a task re-registered with other data is counted anew)."""
  data = token_cache.TokenizedTask(task)
  key = (data.dir, vocab_size)
  if key not in _UNIGRAM_COUNTS:
    counts = np.zeros(vocab_size, np.int64)
    for block in data.shard_tokens():
      counts += np.bincount(block, minlength=vocab_size)[:vocab_size]
    _UNIGRAM_COUNTS[key] = counts
  return _UNIGRAM_COUNTS[key]
