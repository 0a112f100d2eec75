"""Per-domain evaluation of a training run: the evaluation sets on the mesh, and the mean token
loss, perplexity and bits per byte of each domain."""

import math

import jax
import numpy as np

from synthjax import sharding
from synthjax.training.config import TrainConfig


def eval_sets(cfg: TrainConfig, mesh):
  """domain -> (source, [(global batch, document id per target or None)])."""
  out = {}
  for name, factory in (cfg.eval_sources or {}).items():
    source = factory(
        seq_len=cfg.seq_len,
        batch_size=cfg.eval_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    if hasattr(source, "eval_batches"):  # an EvalSet: a fixed set of documents
      batches = [
          (sharding.global_batch(local, mesh), doc_ids) for local, doc_ids in source.eval_batches()
      ]
    else:  # a row source (e.g. MarkovSource): its first eval_batches batches
      batches = [
          (sharding.global_batch(source.next_batch(), mesh), None) for _ in range(cfg.eval_batches)
      ]
    out[name] = (source, batches)
  return out


def evaluate(eval_step, params, eval_sets):
  """Per domain: mean token loss, perplexity, and (for an EvalSet) bits per byte, the unigram
  baseline and per-document loss sums; plus the token-weighted average over domains.
  Returns (metrics to log, per-domain details for the run record)."""
  metrics, details = {}, {}
  total_loss = total_tokens = 0.0
  for name, (source, batches) in eval_sets.items():
    n_docs = getattr(source, "documents", 0)
    doc_sums, doc_tokens = np.zeros(n_docs), np.zeros(n_docs)
    loss_sum = tokens = 0.0
    for batch, doc_ids in batches:
      losses, weights = (
          np.asarray(x, np.float64) for x in jax.device_get(eval_step(params, batch))
      )
      loss_sum += losses.sum()
      tokens += weights.sum()
      if doc_ids is not None:
        real = doc_ids >= 0
        doc_sums += np.bincount(doc_ids[real], losses[real], minlength=n_docs)
        doc_tokens += np.bincount(doc_ids[real], weights[real], minlength=n_docs)
    loss = loss_sum / max(tokens, 1.0)
    metrics[f"eval/{name}/loss"] = loss
    metrics[f"eval/{name}/ppl"] = math.exp(min(loss, 50.0))
    d = {"loss": loss, "tokens": int(tokens)}
    if n_docs:
      d.update(
          bytes=source.bytes,
          doc_loss_sums=doc_sums.tolist(),
          doc_tokens=doc_tokens.astype(int).tolist(),
      )
      d["bits_per_byte"] = metrics[f"eval/{name}/bpb"] = (
          loss_sum / math.log(2) / max(source.bytes, 1)
      )
      if source.unigram_loss is not None:
        d["unigram_loss"] = source.unigram_loss
    details[name] = d
    total_loss, total_tokens = total_loss + loss_sum, total_tokens + tokens
  if eval_sets:
    metrics["eval/avg/loss"] = total_loss / max(total_tokens, 1.0)
    metrics["eval/avg/ppl"] = math.exp(min(metrics["eval/avg/loss"], 50.0))
  return metrics, details
