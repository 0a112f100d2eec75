"""Vocabularies: train a SentencePiece model offline, or load one (SentencePiece .model or an
HF tokenizer.json) as a seqio Vocabulary.

    python -m synthjax.data.vocab --input=corpus.jsonl --vocab_size=2048 --out=vocab/sp2k

Ids follow seqio/T5: 0 pad, 1 EOS, 2 UNK; no BOS.
"""

import argparse
import os
import tempfile
from typing import Iterable

from synthjax import quiet

quiet.import_tensorflow()  # seqio loads it: its start-up lines stay out of a binary's output
import seqio

from synthjax import storage
from synthjax.errors import ArgumentParser, UserError, exit_on_user_error

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    out_prefix: str,
    model_type: str = "unigram",
    exact_size: bool = False,
) -> str:
  """Train a SentencePiece model (unigram, bpe, char or word); returns the .model path,
  written atomically. A small corpus may support fewer pieces than asked: with `exact_size`
  that is an error (and nothing is written), else the smaller vocabulary is kept."""
  import sentencepiece as spm

  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 3:
    raise UserError(
        f"vocab_size must be an integer above 3 (pad, EOS and UNK are 3 pieces), "
        f"got {vocab_size!r}"
    )
  out_prefix = storage.abspath(out_prefix)
  storage.check_writable(storage.dirname(out_prefix))
  with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "corpus.txt")
    n = 0
    with open(corpus, "w", encoding="utf-8") as f:
      for t in texts:
        t = " ".join(t.split())
        if t:
          f.write(t + "\n")
          n += 1
    if n == 0:
      raise UserError("cannot train a vocabulary on an empty corpus")
    prefix = os.path.join(tmp, "sp")
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        character_coverage=0.9995,
        hard_vocab_limit=False,  # a small corpus may not support the full size
        num_threads=2,
        minloglevel=2,
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
    )
    pieces = spm.SentencePieceProcessor(model_file=prefix + ".model").get_piece_size()
    if exact_size and pieces < vocab_size:
      raise UserError(
          f"the corpus supports only {pieces} pieces, not the {vocab_size} asked "
          f"({n} lines of text); lower --vocab_size or give more text"
      )
    storage.upload(prefix + ".model", out_prefix + ".model")
  return out_prefix + ".model"


class HfTokenizerVocabulary(seqio.Vocabulary):
  """An HF tokenizers file as a seqio Vocabulary (the tf ops go through tf.py_function)."""

  def __init__(self, path: str, eos_id: int):
    from tokenizers import Tokenizer

    self._path, self._eos = path, eos_id
    self._tok = Tokenizer.from_file(path)
    super().__init__(extra_ids=0)

  @property
  def eos_id(self):
    return self._eos

  @property
  def unk_id(self):
    return None

  @property
  def _base_vocab_size(self):
    return self._tok.get_vocab_size()

  def _encode(self, s):
    return self._tok.encode(s, add_special_tokens=False).ids

  def _decode(self, ids):
    return self._tok.decode([i for i in ids if i >= 0])

  def _encode_tf(self, s):
    import tensorflow as tf

    out = tf.py_function(
        lambda x: tf.constant(self._encode(x.numpy().decode()), tf.int32), [s], tf.int32
    )
    out.set_shape([None])
    return out

  def _decode_tf(self, ids):
    import tensorflow as tf

    return tf.py_function(lambda x: tf.constant(self._decode(x.numpy().tolist())), [ids], tf.string)

  def __eq__(self, other):
    return isinstance(other, HfTokenizerVocabulary) and other._path == self._path


def load_vocabulary(path: str) -> seqio.Vocabulary:
  """A vocabulary from a local path or an object-store URL (read through a local copy: the
  tokenizer libraries read local files only). `vocab.synthjax_path` keeps where it came from,
  so a Beam worker can load the same one."""
  if not storage.exists(path):
    raise UserError(f"{path}: no such vocabulary file")
  local = storage.local_copy(path)
  if path.endswith(".model"):
    vocab = seqio.SentencePieceVocabulary(local)
  elif path.endswith(".json"):
    meta = storage.join(storage.dirname(path), "tokenizer_meta.json")
    eos = storage.read_json(meta).get("eos_id", 0) if storage.exists(meta) else 0
    vocab = HfTokenizerVocabulary(local, eos)
  else:
    raise UserError(
        f"{path}: not a vocabulary (expected a SentencePiece .model or a tokenizer.json)"
    )
  vocab.synthjax_path = path
  return vocab


@exit_on_user_error("synthjax.data.vocab")
def main(argv=None):
  from synthjax.data import sources

  p = ArgumentParser(
      prog="python -m synthjax.data.vocab",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--input", required=True, help="file glob (JSONL with 'text', text, Parquet)")
  p.add_argument("--vocab_size", type=int, default=2048)
  p.add_argument("--out", required=True, help="output prefix; writes OUT.model")
  p.add_argument("--overwrite", action="store_true", help="replace an existing OUT.model")
  args = p.parse_args(argv)
  if storage.exists(args.out + ".model") and not args.overwrite:
    # a vocabulary replaced under tokenized copies and runs would make them unreadable
    raise UserError(f"{args.out}.model exists; pass --overwrite to replace it")
  path = train_sentencepiece(
      (d["text"] for d in sources.read_documents(args.input)),
      args.vocab_size,
      args.out,
      exact_size=True,
  )
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
