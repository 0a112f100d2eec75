"""A study's plan, the same for the in-process study and the Ray backend: where its data lives,
the keys that say what each piece was made from, and every training run as a gin job whose
MODEL_DIR carries the key of all it depends on."""

import functools
import hashlib
import json
import os

import gin

from synthjax import gin_cli, storage
from synthjax.errors import UserError
from synthjax.study_config import EMBEDDED, StudyConfig

LEASE_ENV = "SYNTHJAX_STUDY_LEASE"  # the owner id of the study folder's lease a driver holds


def content_key(*parts) -> str:
  """A short content key: everything a stage's output depends on, JSON-serialized."""
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def files_key(pattern: str, dry_run: bool = False):
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


class Study:
  """One study's plan: its settings, folders and data. The data reads the corpus stage's
  manifest and stamps every source file, so it is built on first use (after the corpus stage)
  and kept: a process builds it once."""

  def __init__(self, cfg: StudyConfig, dry_run: bool = False):
    self.cfg, self.dry_run = cfg, dry_run
    self.paths = study_paths(cfg)

  @functools.cached_property
  def data(self) -> "Data":
    return Data(self.cfg, self.paths, self.dry_run)


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
      self.natural_key = content_key(files_key(self.natural, dry_run))
    self.domains = dict(sorted(domains.items()))
    self.vocab_key = content_key(self.natural_key, cfg.vocab_size, cfg.vocab_documents)
    self.vocab = storage.join(paths["vocab"], self.vocab_key, "sp.model")
    self.eval_key = content_key(
        self.natural_key
        if cfg.natural == EMBEDDED and not cfg.eval_domains
        else {d: files_key(p, dry_run) for d, p in self.domains.items()},
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


def generator_dir(cfg, paths) -> str:
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


def vocabulary(data):
  from synthjax.data.vocab import load_vocabulary

  return load_vocabulary(data.vocab)


def register(study: Study):
  from synthjax.data import tasks

  data = study.data
  voc = vocabulary(data)
  tasks.register_study_data(data.vocab, kinds(data), data.domains, shares=())
  return voc, data


def kinds(data) -> dict:
  """Task name -> source of every training kind: the natural text and the generated sets."""
  from synthjax.generate import output as generate_output

  return {
      "natural": data.natural,
      **{k: generate_output.kept_files(out_dir) for k, (out_dir, _, _) in data.synthetic.items()},
  }


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
      f"register_study_data.kinds = {q(kinds(data))}",
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
  from synthjax.training.branches import branch_record_path

  if budget == run_budget:
    return storage.join(model_dir, "run.json")
  return branch_record_path(model_dir, budget)


def train_jobs(study: Study) -> list:
  """Every training job of the grid; a dry run, before any data exists, takes the vocabulary
  size asked for and keys sources by their names."""
  cfg = study.cfg
  vocab_size = cfg.vocab_size if study.dry_run else vocabulary(study.data).vocab_size
  return [train_job(cfg, study.paths, study.data, vocab_size, r) for r in cfg.train_runs()]


def check_budgets(study: Study) -> None:
  """Every run's budget against the tokenized copies' stats, before any training."""
  from synthjax.data import loader

  cfg = study.cfg
  _, data = register(study)
  gin.bind_parameter("cache_dir.path", study.paths["tokens"])
  for r in cfg.train_runs():
    loader.check_budget(
        r["mixture"],
        r["budget"],
        cfg.batch_size,
        cfg.seq_len,
        sorted(data.synthetic) if cfg.repeat_synthetic else [],
    )


def record_paths(study: Study) -> list:
  """The run record of every job and budget of the grid (runs of other settings are not
  among them)."""
  return [p for j in train_jobs(study) for p in j.records]
