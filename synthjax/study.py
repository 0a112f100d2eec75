"""The end-to-end study on one machine: corpus -> vocabulary -> synthetic data -> tokenized
copies (Beam) -> mixtures -> a grid of models -> per-domain evaluation -> analysis report.

    python -m synthjax.study --gin_file=study/smoke.gin [--gin.STUDY_DIR=studies/smoke]

Every stage writes under STUDY_DIR and is keyed by what it was made from, so a rerun skips
finished work and a killed study resumes: the corpus and vocabulary are written atomically,
generation resumes per shard, each training run resumes from its checkpoint (and a finished
one returns its run record), and the report is rebuilt from the run records.
"""
import functools
import glob
import hashlib
import json
import os
import sys
import time

import gin

from synthjax import gin_cli
from synthjax.errors import UserError
from synthjax.study_config import EMBEDDED, StudyConfig


def _log(msg: str) -> None:
  print(f"study: {msg}", file=sys.stderr, flush=True)


def _key(*parts) -> str:
  """A short content key: everything a stage's output depends on, JSON-serialized."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _files_key(pattern: str):
  """Names, sizes and modification times of a glob's files (cheap: no bytes read; the token
  cache hashes bytes itself)."""
  from synthjax.data import sources
  if pattern.startswith("tfds:"):
    return pattern
  return [(p, os.path.getsize(p), os.stat(p).st_mtime_ns) for p in sources.expand(pattern)]


def _paths(cfg: StudyConfig) -> dict:
  d = cfg.study_dir
  return {"corpus": os.path.join(d, "corpus"), "vocab": os.path.join(d, "vocab"),
          "synthetic": os.path.join(d, "synthetic"), "tokens": os.path.join(d, "tokens"),
          "report": os.path.join(d, "report")}


class Data:
  """Where the study's data lives and the keys that say what it was made from."""

  def __init__(self, cfg: StudyConfig, paths: dict):
    corpus = paths["corpus"]
    if cfg.natural == EMBEDDED:
      manifest = _embedded_manifest(corpus)
      self.natural = os.path.join(corpus, "natural_train.jsonl")
      self.natural_key = _key(manifest)  # the corpus's content, wherever the study lives
      domains = cfg.eval_domains or {
          n: os.path.join(corpus, "valid", f"{n}.jsonl") for n in manifest["domains"]}
    else:
      self.natural, domains = cfg.natural, dict(cfg.eval_domains)
      self.natural_key = _key(_files_key(self.natural))
    self.domains = dict(sorted(domains.items()))
    self.vocab_key = _key(self.natural_key, cfg.vocab_size, cfg.vocab_documents)
    self.vocab = os.path.join(paths["vocab"], self.vocab_key, "sp.model")
    self.eval_key = _key(self.natural_key if cfg.natural == EMBEDDED and not cfg.eval_domains
                         else {d: _files_key(p) for d, p in self.domains.items()},
                         sorted(self.domains), cfg.eval_tokens)
    self.synthetic = {}
    for kind in cfg.shares:
      settings = _generate_settings(cfg, kind, self.natural)
      key = _key(self.natural_key, {k: v for k, v in settings.items() if k != "input"})
      self.synthetic[kind] = (os.path.join(paths["synthetic"], f"{kind}-{key}"), key, settings)


def _embedded_manifest(corpus: str) -> dict:
  path = os.path.join(corpus, "manifest.json")
  if not os.path.exists(path):
    raise UserError(f"{path}: no embedded corpus yet; run the 'corpus' stage first")
  with open(path) as f:
    return json.load(f)


def _generate_settings(cfg, kind, natural) -> dict:
  settings = dict(input=natural, style=cfg.styles[kind], generator=cfg.generator,
                  max_documents=cfg.generate_documents)
  settings.update(cfg.generate_overrides.get(kind, {}))
  return settings


def stage_corpus(cfg, paths):
  if cfg.natural != EMBEDDED:
    _log(f"corpus: natural text from {cfg.natural}; {len(cfg.eval_domains)} evaluation domains")
    return
  from synthjax.data import demo_corpus
  manifest = demo_corpus.build(paths["corpus"])
  _log(f"corpus: {manifest['files']['natural_train']['documents']} training documents, "
       f"{len(manifest['domains'])} evaluation domains")


def stage_vocab(cfg, paths):
  from synthjax.data import sources, vocab
  data = Data(cfg, paths)
  if os.path.exists(data.vocab):
    _log(f"vocab: {data.vocab} (made already for this corpus and vocab_size)")
    return
  if os.path.isdir(paths["vocab"]) and os.listdir(paths["vocab"]):
    _log("vocab: the corpus or vocab_size changed since the last vocabulary: training anew")
  docs = sources.read_documents(data.natural) if not data.natural.startswith("tfds:") else (
      sources.tfds_documents(data.natural[len("tfds:"):]))
  texts = (d["text"] for d, _ in zip(docs, range(cfg.vocab_documents)))
  vocab.train_sentencepiece(texts, cfg.vocab_size, data.vocab[:-len(".model")])
  _log(f"vocab: {data.vocab}")


def _generator_dir(cfg, paths) -> str:
  if cfg.generator == "tiny-random":
    from synthjax.generate import tiny_generator
    return tiny_generator.make(os.path.join(cfg.study_dir, "generator"))
  return cfg.generator


def stage_generate(cfg, paths):
  from synthjax.generate import job
  data = Data(cfg, paths)
  generator = _generator_dir(cfg, paths)
  for kind, (out_dir, _, settings) in data.synthetic.items():
    t = time.time()
    manifest = job.run(job.GenerateConfig(**dict(settings, generator=generator,
                                                 output_dir=out_dir)))
    _log(f"generate {kind}: {manifest.get('kept')} kept of {manifest.get('chunks')} chunks "
         f"(rejected {manifest.get('rejected')}) in {time.time() - t:.0f}s")


def register(cfg, paths):
  from synthjax.data import tasks
  from synthjax.data.vocab import load_vocabulary
  data = Data(cfg, paths)
  voc = load_vocabulary(data.vocab)
  tasks.register_task("natural", data.natural, voc)
  for kind, (out_dir, _, _) in data.synthetic.items():
    tasks.register_task(kind, os.path.join(out_dir, "shard-*.jsonl"), voc)
  for domain, source in data.domains.items():
    tasks.register_task(tasks.VALID_PREFIX + domain, source, voc)
  return voc, data


def stage_tokenize(cfg, paths):
  """Every task the grid reads, tokenized once into the study's shared copies (Beam)."""
  from synthjax.data import tokenize
  _, data = register(cfg, paths)
  gin.bind_parameter("cache_dir.path", paths["tokens"])
  names = ["natural", *data.synthetic, *(f"valid_{d}" for d in data.domains)]
  tokenize.tokenize(names, cfg.tokenize_options)


def _run_dir(cfg, data, voc, job) -> str:
  """The job's MODEL_DIR: its cell and seed, plus the key of every setting it depends on
  (the run file and model preset, vocabulary, synthetic data, evaluation set, shapes and
  extra bindings)."""
  gin_texts = [_gin_text("train/base.gin"), _gin_text(f"models/{job['size']}.gin")]
  key = _key(gin_texts, data.vocab_key, voc.vocab_size, data.eval_key,
             {k: data.synthetic[k][1] for k in job["kinds"] if k in data.synthetic},
             cfg.seq_len, cfg.batch_size, list(cfg.train_bindings), cfg.repeat_synthetic)
  return os.path.join(job["cell_dir"], f"seed{job['seed']}-{key}")


@functools.lru_cache(maxsize=None)
def _gin_text(name: str) -> str:
  with open(os.path.join(gin_cli.GIN_CONFIGS, name)) as f:
    return f.read()


def _job_bindings(cfg, paths, data, voc, job, model_dir) -> list:
  domains = list(data.domains)
  return [
      f"MODEL_DIR = {model_dir!r}", f"TRAIN_TOKENS = {job['budget']}",
      f"SEQ_LEN = {cfg.seq_len}", f"BATCH_SIZE = {cfg.batch_size}",
      f"cache_dir.path = {paths['tokens']!r}",
      f"ModelConfig.V = {voc.vocab_size}", f"TrainConfig.seed = {job['seed']}",
      "TrainConfig.data_source = @MixtureLoader", f"MixtureLoader.mixture = {job['mixture']!r}",
      "MixtureLoader.budget = %TRAIN_TOKENS", f"MixtureLoader.seed = {job['seed']}",
      f"MixtureLoader.allow_repeat = {sorted(data.synthetic) if cfg.repeat_synthetic else []!r}",
      "TrainConfig.eval_sources = {" + ", ".join(f"{d!r}: @{d}/EvalSet" for d in domains) + "}",
      *[f"{d}/EvalSet.task = {'valid_' + d!r}" for d in domains],
      f"EvalSet.max_tokens = {cfg.eval_tokens}", "EvalSet.baseline_task = 'natural'",
      "TrainConfig.log_every = 1000000", "TrainConfig.checkpoint_every = 100",
      *cfg.train_bindings]


def _current_run_dirs(cfg, paths):
  from synthjax.data.vocab import load_vocabulary
  data = Data(cfg, paths)
  voc = load_vocabulary(data.vocab)
  return [_run_dir(cfg, data, voc, j) for j in cfg.jobs()]


def stage_train(cfg, paths):
  from synthjax import train as train_lib
  from synthjax.data import loader
  from synthjax.models.config import ModelConfig
  from synthjax.training.config import TrainConfig
  from synthjax.training.optimizer import OptimizerConfig
  voc, data = register(cfg, paths)
  jobs = cfg.jobs()
  gin.bind_parameter("cache_dir.path", paths["tokens"])
  for j in jobs:  # every budget against the tokenized copies' stats, before any training
    loader.check_budget(j["mixture"], j["budget"], cfg.batch_size, cfg.seq_len,
                        sorted(data.synthetic) if cfg.repeat_synthetic else [])
  t0, done_tokens = time.time(), 0
  total_tokens = sum(j["budget"] for j in jobs)
  for i, j in enumerate(jobs, start=1):
    t = time.time()
    model_dir = _run_dir(cfg, data, voc, j)
    what = f"train {i}/{len(jobs)}: {j['size']} D={j['budget']} {j['mixture']} seed {j['seed']}"
    done_tokens += j["budget"]
    if os.path.exists(os.path.join(model_dir, "run.json")):
      _log(f"{what}: done already")
      continue
    stale = sorted(glob.glob(os.path.join(j["cell_dir"], f"seed{j['seed']}-*")))
    if stale and not os.path.exists(model_dir):
      _log(f"{what}: settings changed since {os.path.basename(stale[-1])}: training anew")
    gin_cli.parse(["train/base.gin", f"models/{j['size']}.gin"],
                  _job_bindings(cfg, paths, data, voc, j, model_dir))
    record = train_lib.train(TrainConfig(), ModelConfig(), OptimizerConfig())
    elapsed = time.time() - t0
    eta = elapsed / done_tokens * (total_tokens - done_tokens)
    _log(f"{what}: loss {record['loss']:.4f} ({time.time() - t:.1f}s; ETA "
         f"{int(eta // 60)}m{int(eta % 60):02d}s)")


def _report_digest(record_paths) -> str:
  """What the report depends on: the run records and the analysis code that reads them."""
  from synthjax import analyze
  code = sorted(glob.glob(os.path.join(os.path.dirname(analyze.__file__), "*.py")))
  h = hashlib.sha256()
  for path in list(record_paths) + code:
    with open(path, "rb") as f:
      h.update(path.encode() + b"\0" + f.read() + b"\0")
  return h.hexdigest()


def stage_analyze(cfg, paths):
  """The report over this grid's run records (runs of other settings are ignored), rebuilt
  only when the records or the analysis code changed (the fits and bootstraps take a while)."""
  from synthjax import atomic
  from synthjax.analyze import report
  records = [os.path.join(d, "run.json") for d in _current_run_dirs(cfg, paths)]
  found = [p for p in records if os.path.exists(p)]
  if len(found) < len(records):
    _log(f"report: {len(records) - len(found)} of {len(records)} runs have no record yet")
  digest = _report_digest(found)
  stamp = os.path.join(paths["report"], "run_records.sha256")
  path = os.path.join(paths["report"], "report.md")
  if os.path.exists(path) and os.path.exists(stamp):
    with open(stamp) as f:
      if f.read() == digest:
        _log(f"report: {path} (run records and analysis unchanged)")
        return path
  path = report.report(found, paths["report"])
  atomic.write_text(stamp, digest)
  _log(f"report: {path}")
  return path


def run(cfg: StudyConfig) -> str:
  cfg.validate()  # before anything is written
  paths = _paths(cfg)
  os.makedirs(cfg.study_dir, exist_ok=True)
  t0 = time.time()
  report_path = None
  for stage in cfg.stages:
    t = time.time()
    _log(f"stage {stage} ...")
    out = globals()[f"stage_{stage}"](cfg, paths)
    report_path = out or report_path
    _log(f"stage {stage} done in {time.time() - t:.0f}s")
  _log(f"finished in {time.time() - t0:.0f}s")
  return report_path


def _run(rest):
  if rest:
    raise UserError(f"unknown arguments: {' '.join(rest)}")
  path = run(gin_cli.call_configured(StudyConfig))
  if path:
    print(f"report: {path}")


def main(argv=None):
  gin_cli.main("synthjax.study", _run, argv)


if __name__ == "__main__":
  main()
