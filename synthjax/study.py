"""The end-to-end study on one machine: corpus -> vocabulary -> synthetic data -> tokenized
copies (Beam) -> mixtures -> a grid of models -> per-domain evaluation -> analysis report.

    python -m synthjax.study --gin_file=study/smoke.gin [--gin.STUDY_DIR=studies/smoke]

Every stage writes under STUDY_DIR and is keyed by what it was made from, so a rerun skips
finished work and a killed study resumes: the corpus and vocabulary are written atomically,
generation resumes per shard, each training run resumes from its checkpoint (and a finished
one returns its run record), and the report is rebuilt from the run records.
"""

import contextlib
import functools
import glob
import hashlib
import json
import os
import sys
import time
from typing import Optional

import gin

from synthjax import gin_cli, lease, storage
from synthjax.errors import UserError
from synthjax.study_config import EMBEDDED, StudyConfig

LEASE_ENV = "SYNTHJAX_STUDY_LEASE"  # the owner id of the study folder's lease a driver holds


def _log(msg: str) -> None:
  print(f"study: {msg}", file=sys.stderr, flush=True)


def content_key(*parts) -> str:
  """A short content key: everything a stage's output depends on, JSON-serialized."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _files_key(pattern: str, dry_run: bool = False):
  """Names, sizes and change stamps of a glob's files (no bytes read; the token cache hashes
  content itself). A dry run keys by the pattern alone: it reaches no store."""
  from synthjax.data import sources

  if pattern.startswith("tfds:") or dry_run:
    return pattern
  return [[p, *storage.stamp(p)[1:]] for p in sources.expand(pattern)]


def study_paths(cfg: StudyConfig) -> dict:
  return {
      name: storage.join(cfg.study_dir, name)
      for name in ("corpus", "vocab", "synthetic", "tokens", "report")
  }


class Data:
  """Where the study's data lives and the keys that say what it was made from."""

  def __init__(self, cfg: StudyConfig, paths: dict, dry_run: bool = False):
    corpus = paths["corpus"]
    if cfg.natural == EMBEDDED:
      manifest = _embedded_manifest(corpus) if not dry_run else {"domains": []}
      self.natural = os.path.join(corpus, "natural_train.jsonl")
      self.natural_key = content_key(manifest)  # the corpus's content, wherever the study lives
      domains = cfg.eval_domains or {
          n: os.path.join(corpus, "valid", f"{n}.jsonl") for n in manifest["domains"]
      }
    else:
      self.natural, domains = cfg.natural, dict(cfg.eval_domains)
      self.natural_key = content_key(_files_key(self.natural, dry_run))
    self.domains = dict(sorted(domains.items()))
    self.vocab_key = content_key(self.natural_key, cfg.vocab_size, cfg.vocab_documents)
    self.vocab = storage.join(paths["vocab"], self.vocab_key, "sp.model")
    self.eval_key = content_key(
        self.natural_key
        if cfg.natural == EMBEDDED and not cfg.eval_domains
        else {d: _files_key(p, dry_run) for d, p in self.domains.items()},
        sorted(self.domains),
        cfg.eval_tokens,
    )
    from synthjax.generate import job

    self.synthetic = {}
    for kind in cfg.shares:
      settings = _generate_settings(cfg, kind, self.natural)
      key = content_key(
          self.natural_key,
          {k: v for k, v in settings.items() if k != "input"},
          job.SIGNATURE_VERSION,
      )
      self.synthetic[kind] = (storage.join(paths["synthetic"], f"{kind}-{key}"), key, settings)


def _embedded_manifest(corpus: str) -> dict:
  path = os.path.join(corpus, "manifest.json")
  if not os.path.exists(path):
    raise UserError(f"{path}: no embedded corpus yet; run the 'corpus' stage first")
  with open(path) as f:
    return json.load(f)


def _generate_settings(cfg, kind, natural) -> dict:
  settings = dict(
      input=natural,
      style=cfg.styles[kind],
      generator=cfg.generator,
      max_documents=cfg.generate_documents,
  )
  settings.update(cfg.generate_overrides.get(kind, {}))
  return settings


def stage_corpus(cfg, paths):
  if cfg.natural != EMBEDDED:
    _log(f"corpus: natural text from {cfg.natural}; {len(cfg.eval_domains)} evaluation domains")
    return
  from synthjax.data import demo_corpus

  manifest = demo_corpus.build(paths["corpus"])
  _log(
      f"corpus: {manifest['files']['natural_train']['documents']} training documents, "
      f"{len(manifest['domains'])} evaluation domains"
  )


def stage_vocab(cfg, paths):
  from synthjax.data import sources, vocab

  data = Data(cfg, paths)
  if storage.exists(data.vocab):
    _log(f"vocab: {data.vocab} (made already for this corpus and vocab_size)")
    return
  if storage.isdir(paths["vocab"]) and storage.listdir(paths["vocab"]):
    _log("vocab: the corpus or vocab_size changed since the last vocabulary: training anew")
  docs = (
      sources.read_documents(data.natural)
      if not data.natural.startswith("tfds:")
      else (sources.tfds_documents(data.natural[len("tfds:") :]))
  )
  texts = (d["text"] for d, _ in zip(docs, range(cfg.vocab_documents)))
  vocab.train_sentencepiece(texts, cfg.vocab_size, data.vocab[: -len(".model")])
  _log(f"vocab: {data.vocab}")


def _generator_dir(cfg, paths) -> str:
  if cfg.generator == "tiny-random":
    from synthjax.generate import tiny_generator
    # made on each host from a fixed seed: beside a local study, else in this host's cache
    where = (
        os.path.join(os.path.expanduser("~"), ".cache", "synthjax", "models", "tiny-random")
        if storage.is_remote(cfg.study_dir)
        else os.path.join(cfg.study_dir, "generator")
    )
    return tiny_generator.make(where)
  return cfg.generator


def stage_generate(cfg, paths):
  """Each kind's synthetic text; on a cluster every host of the job runs this and takes its
  own part of the corpus (SYNTHJAX_PROCESS_ID of SYNTHJAX_NUM_PROCESSES)."""
  from synthjax.generate import job

  data = Data(cfg, paths)
  generator = _generator_dir(cfg, paths)
  for kind, (out_dir, _, settings) in data.synthetic.items():
    t = time.time()
    manifest = job.run(
        job.GenerateConfig(**dict(settings, generator=generator, output_dir=out_dir))
    )
    if manifest.get("complete"):
      _log(
          f"generate {kind}: {manifest['kept']} kept of {manifest['chunks']} chunks "
          f"(rejected {manifest['rejected']}) in {time.time() - t:.0f}s"
      )
    else:
      _log(f"generate {kind}: this host's part done in {time.time() - t:.0f}s")


def _vocabulary(data):
  from synthjax.data.vocab import load_vocabulary

  return load_vocabulary(data.vocab)


def register(cfg, paths):
  from synthjax.data import tasks

  data = Data(cfg, paths)
  voc = _vocabulary(data)
  tasks.register_study_data(data.vocab, _kinds(data), data.domains, shares=())
  return voc, data


def _kinds(data) -> dict:
  """Task name -> source of every training kind: the natural text and the generated sets."""
  from synthjax.generate import job

  return {
      "natural": data.natural,
      **{k: job.kept_files(out_dir) for k, (out_dir, _, _) in data.synthetic.items()},
  }


def stage_tokenize(cfg, paths):
  """Every task the grid reads, tokenized once into the study's shared copies (Beam)."""
  from synthjax.data import tokenize
  from synthjax.generate import job

  for kind, (out_dir, _, _) in Data(cfg, paths).synthetic.items():
    job.require_complete(out_dir, kind)
  _, data = register(cfg, paths)
  gin.bind_parameter("cache_dir.path", paths["tokens"])
  names = ["natural", *data.synthetic, *(f"valid_{d}" for d in data.domains)]
  tokenize.tokenize(names, cfg.tokenize_options)


@functools.lru_cache(maxsize=None)
def _gin_text(name: str) -> str:
  with open(os.path.join(gin_cli.GIN_CONFIGS, name)) as f:
    return f.read()


def _job_name(run: dict) -> str:
  return "-".join(
      [
          run["size"],
          str(run["budget"]),
          run["mixture"].replace("+", "-").replace("@", "").replace(".", ""),
          f"s{run['seed']}",
      ]
  )


def train_job(cfg: StudyConfig, paths: dict, data: Data, vocab_size: int, run: dict):
  """A training run of the grid as one job: gin files plus bindings, the same whether the
  study trains it in this process or a launcher runs `python -m synthjax.train` on a cluster.
  The job registers its own data (register_study_data) and evaluates every domain. Its
  MODEL_DIR holds the key of every setting it depends on (the gin files' text, vocabulary,
  synthetic sets, evaluation set, shapes, budgets and extra bindings), so a changed setting
  trains anew."""
  from synthjax import grid

  gin_files = ["train/base.gin", f"models/{run['size']}.gin", *cfg.train_gin]
  key = content_key(
      [_gin_text(f) for f in gin_files],
      data.vocab_key,
      vocab_size,
      data.eval_key,
      {k: data.synthetic[k][1] for k in run["kinds"] if k in data.synthetic},
      cfg.seq_len,
      cfg.batch_size,
      list(cfg.train_bindings),
      cfg.repeat_synthetic,
      run["branches"],
  )
  model_dir = storage.join(run["cell_dir"], f"seed{run['seed']}-{key}")
  domains = list(data.domains)
  repeat = sorted(data.synthetic) if cfg.repeat_synthetic else []
  q = json.dumps  # gin reads JSON strings, lists and dicts; double quotes travel well in ssh
  bindings = [
      "import synthjax.data.loader",
      "import synthjax.data.tasks",  # what the lines below bind
      f"MODEL_DIR = {q(model_dir)}",
      f"TRAIN_TOKENS = {run['budget']}",
      f"SEQ_LEN = {cfg.seq_len}",
      f"BATCH_SIZE = {cfg.batch_size}",
      f"cache_dir.path = {q(paths['tokens'])}",
      f"ModelConfig.V = {vocab_size}",
      f"TrainConfig.seed = {run['seed']}",
      f"TrainConfig.branch_budgets = {q(list(run['branches']))}",
      "TrainConfig.data_source = @MixtureLoader",
      "MixtureLoader.register = @register_study_data",
      f"register_study_data.vocabulary_path = {q(data.vocab)}",
      f"register_study_data.kinds = {q(_kinds(data))}",
      f"register_study_data.validation = {q(data.domains)}",
      "register_study_data.shares = []",
      f"MixtureLoader.mixture = {q(run['mixture'])}",
      "MixtureLoader.budget = %TRAIN_TOKENS",
      f"MixtureLoader.seed = {run['seed']}",
      f"MixtureLoader.allow_repeat = {q(repeat)}",
      "TrainConfig.eval_sources = {" + ", ".join(f"{q(d)}: @{d}/EvalSet" for d in domains) + "}",
      *[f"{d}/EvalSet.task = {q('valid_' + d)}" for d in domains],
      f"EvalSet.max_tokens = {cfg.eval_tokens}",
      'EvalSet.baseline_task = "natural"',
      *cfg.train_bindings,
  ]
  return grid.Job(
      _job_name(run),
      "synthjax.train",
      gin_files,
      bindings,
      records=[record_path(model_dir, run["budget"], b) for b in [*run["branches"], run["budget"]]],
  )


def record_path(model_dir: str, run_budget: int, budget: int) -> str:
  """Where a run's record for one budget lands: its own, or a cooldown branch's."""
  from synthjax.train import branch_record_path

  if budget == run_budget:
    return storage.join(model_dir, "run.json")
  return branch_record_path(model_dir, budget)


def train_jobs(cfg: StudyConfig, paths: dict, dry_run: bool = False) -> list:
  """Every training job of the grid; a dry run, before any data exists, takes the vocabulary
  size asked for and keys sources by their names."""
  data = Data(cfg, paths, dry_run)
  vocab_size = cfg.vocab_size if dry_run else _vocabulary(data).vocab_size
  return [train_job(cfg, paths, data, vocab_size, r) for r in cfg.train_runs()]


def check_budgets(cfg: StudyConfig, paths: dict) -> None:
  """Every run's budget against the tokenized copies' stats, before any training."""
  from synthjax.data import loader

  _, data = register(cfg, paths)
  gin.bind_parameter("cache_dir.path", paths["tokens"])
  for r in cfg.train_runs():
    loader.check_budget(
        r["mixture"],
        r["budget"],
        cfg.batch_size,
        cfg.seq_len,
        sorted(data.synthetic) if cfg.repeat_synthetic else [],
    )


def stage_train(cfg, paths):
  from synthjax import train as train_lib
  from synthjax.models.config import ModelConfig
  from synthjax.training.config import TrainConfig
  from synthjax.training.optimizer import OptimizerConfig

  check_budgets(cfg, paths)
  runs, jobs = cfg.train_runs(), train_jobs(cfg, paths)
  t0, done_tokens = time.time(), 0
  total_tokens = sum(r["budget"] for r in runs)
  for i, (r, j) in enumerate(zip(runs, jobs), start=1):
    t = time.time()
    what = f"train {i}/{len(jobs)}: {r['size']} D={r['budget']} {r['mixture']} seed {r['seed']}"
    done_tokens += r["budget"]
    if all(storage.exists(p) for p in j.records):
      _log(f"{what}: done already")
      continue
    model_dir = storage.dirname(j.records[-1])
    stale = sorted(
        storage.glob(storage.join(r["cell_dir"], f"seed{r['seed']}-*", "model.json"))
    )  # runs of this cell begun before
    if stale and not storage.exists(model_dir):
      _log(
          f"{what}: settings changed since "
          f"{storage.basename(storage.dirname(stale[-1]))}: training anew"
      )
    # the job's definition, quieter: a study trains dozens of runs in this process
    gin_cli.parse(j.gin_files, [*j.bindings, "TrainConfig.log_every = 1000000"])
    record = train_lib.train(TrainConfig(), ModelConfig(), OptimizerConfig())
    elapsed = time.time() - t0
    eta = elapsed / done_tokens * (total_tokens - done_tokens)
    _log(
        f"{what}: loss {record['loss']:.4f} ({time.time() - t:.1f}s; ETA "
        f"{int(eta // 60)}m{int(eta % 60):02d}s)"
    )


def record_paths(cfg, paths) -> list:
  """The run record of every job and budget of the grid (runs of other settings are not
  among them)."""
  return [p for j in train_jobs(cfg, paths) for p in j.records]


def _report_digest(record_paths) -> str:
  """What the report depends on: the run records (and the generation manifests) and the
  analysis code that reads them (this file too: it prices the generation)."""
  from synthjax import analyze

  code = sorted(glob.glob(os.path.join(os.path.dirname(analyze.__file__), "*.py"))) + [__file__]
  h = hashlib.sha256()
  for path in list(record_paths) + code:
    h.update(path.encode() + b"\0" + storage.read_bytes(path) + b"\0")
  return h.hexdigest()


def stage_analyze(cfg, paths):
  """The report over this grid's run records (collected from wherever the runs wrote them),
  rebuilt only when the records or the analysis code changed (the fits and bootstraps take a
  while)."""
  from synthjax.analyze import report

  records = record_paths(cfg, paths)
  found = [p for p in records if storage.exists(p)]
  if len(found) < len(records):
    _log(f"report: {len(records) - len(found)} of {len(records)} runs have no record yet")
  synthetic = {
      k: d
      for k, (d, _, _) in Data(cfg, paths).synthetic.items()
      if storage.exists(storage.join(d, "manifest.json"))
  }
  digest = _report_digest(found + [storage.join(d, "manifest.json") for d in synthetic.values()])
  stamp = storage.join(paths["report"], "run_records.sha256")
  path = storage.join(paths["report"], "report.md")
  if storage.exists(path) and storage.exists(stamp) and storage.read_text(stamp) == digest:
    _log(f"report: {path} (run records and analysis unchanged)")
    return path
  path = report.report(
      found,
      paths["report"],
      synthetic=synthetic,
      generation=_generation_costs(cfg, paths, synthetic),
  )
  storage.write_text(stamp, digest)
  _log(f"report: {path}")
  return path


def _generation_costs(cfg, paths, synthetic: dict) -> dict:
  """Per generated kind, what its set cost to make (analyze/compute.py): the generator's
  parameters, the tokens it processed, and the kept text's training tokens."""
  from synthjax.analyze import compute
  from synthjax.analyze import synthetic as synthetic_lib
  from synthjax.checkpoints import store
  from synthjax.data import token_cache
  from synthjax.generate import job
  from synthjax.models import flops

  if not synthetic:
    return {}
  gin.bind_parameter("cache_dir.path", paths["tokens"])
  register(cfg, paths)
  params = flops.param_count(store.load_config(job.resolve_generator(_generator_dir(cfg, paths))))
  out = {}
  for kind, out_dir in synthetic.items():
    generated = synthetic_lib.generator_tokens(out_dir)
    trained = token_cache.stats(kind)["tokens"]
    out[kind] = {
        "generator_params": params,
        "generator_tokens": generated,
        "set_tokens": trained,
        "flops_per_token": compute.flops_per_token(params, generated, trained),
    }
  return out


# In the order a study runs them (study_config.STAGES names the same ones).
STAGES = {
    "corpus": stage_corpus,
    "vocab": stage_vocab,
    "generate": stage_generate,
    "tokenize": stage_tokenize,
    "train": stage_train,
    "analyze": stage_analyze,
}


def use_tfds_data_dir(cfg: StudyConfig) -> None:
  """TFDS reads its datasets from TFDS_DATA_DIR: the study's, for this process and the ones it
  starts."""
  if cfg.tfds_data_dir:
    os.environ["TFDS_DATA_DIR"] = cfg.tfds_data_dir


def run(cfg: StudyConfig) -> Optional[str]:
  cfg.validate()  # before anything is written
  use_tfds_data_dir(cfg)
  paths = study_paths(cfg)
  storage.makedirs(cfg.study_dir)
  t0 = time.time()
  report_path: Optional[str] = None
  with _hold(cfg.study_dir):
    for stage in cfg.stages:
      t = time.time()
      _log(f"stage {stage} ...")
      out = STAGES[stage](cfg, paths)
      report_path = out or report_path
      _log(f"stage {stage} done in {time.time() - t:.0f}s")
  _log(f"finished in {time.time() - t0:.0f}s")
  return report_path


def _hold(study_dir: str):
  """The study folder's lease (one study writes there at a time): taken here, or held already
  by the Ray driver that started this process to run one stage, which passes its owner id
  down in LEASE_ENV."""
  owner = os.environ.get(LEASE_ENV)
  if owner and (lease.holder(study_dir) or {}).get("owner") == owner:
    return contextlib.nullcontext()
  return lease.Lease(study_dir, "a study")


def main(argv=None):
  """In this process, or with --launcher (cluster.py) every stage as jobs on a cluster."""
  argv = sys.argv[1:] if argv is None else list(argv)

  def go(rest):
    cfg = gin_cli.call_configured(StudyConfig)
    if rest:
      from synthjax import cluster

      files, bindings, _, _ = gin_cli.split_argv(argv)
      cluster.run(cfg, cluster.parser().parse_args(rest), files, bindings)
      return
    path = run(cfg)
    if path:
      print(f"report: {path}")

  gin_cli.main("synthjax.study", go, argv)


if __name__ == "__main__":
  main()
