"""The end-to-end study on one machine: corpus -> vocabulary -> synthetic data -> mixtures ->
a grid of models -> per-domain evaluation -> analysis report.

    python -m synthjax.study --gin_file=study/smoke.gin [--gin.STUDY_DIR=studies/smoke]

Every stage writes under STUDY_DIR and is keyed by what it was made from, so a rerun skips
finished work and a killed study resumes: the corpus and vocabulary are written atomically,
generation resumes per shard, each training run resumes from its checkpoint (and a finished
one returns its run record), and the report is rebuilt from the run records.
"""
import os
import sys
import time

from synthjax import gin_cli
from synthjax.errors import UserError
from synthjax.study_config import StudyConfig


def _log(msg: str) -> None:
  print(f"study: {msg}", file=sys.stderr, flush=True)


def _paths(cfg: StudyConfig) -> dict:
  d = cfg.study_dir
  return {"corpus": os.path.join(d, "corpus"), "vocab": os.path.join(d, "vocab", "sp"),
          "synthetic": os.path.join(d, "synthetic"), "report": os.path.join(d, "report")}


def stage_corpus(cfg, paths):
  from synthjax.data import demo_corpus
  manifest = demo_corpus.build(paths["corpus"])
  _log(f"corpus: {manifest['files']['natural_train']['documents']} training documents, "
       f"{len(manifest['domains'])} validation domains")


def stage_vocab(cfg, paths):
  from synthjax.data import sources, vocab
  if os.path.exists(paths["vocab"] + ".model"):
    return
  texts = (d["text"] for d in sources.read_documents(
      os.path.join(paths["corpus"], "natural_train.jsonl")))
  vocab.train_sentencepiece(texts, cfg.vocab_size, paths["vocab"])
  _log(f"vocab: {paths['vocab']}.model")


def _generator_dir(cfg, paths) -> str:
  if cfg.generator == "tiny-random":
    from synthjax.generate import tiny_generator
    return tiny_generator.make(os.path.join(cfg.study_dir, "generator"))
  return cfg.generator


def stage_generate(cfg, paths):
  from synthjax.generate import job
  generator = _generator_dir(cfg, paths)
  for kind in cfg.shares:
    settings = dict(input=os.path.join(paths["corpus"], "natural_train.jsonl"),
                    style=cfg.styles[kind], output_dir=os.path.join(paths["synthetic"], kind),
                    generator=generator, max_documents=cfg.generate_documents)
    settings.update(cfg.generate_overrides.get(kind, {}))
    t = time.time()
    manifest = job.run(job.GenerateConfig(**settings))
    _log(f"generate {kind}: {manifest.get('kept')} kept of {manifest.get('chunks')} chunks "
         f"(rejected {manifest.get('rejected')}) in {time.time() - t:.0f}s")


def register(cfg, paths):
  from synthjax.data import tasks
  from synthjax.data.vocab import load_vocabulary
  voc = load_vocabulary(paths["vocab"] + ".model")
  tasks.register_task("natural", os.path.join(paths["corpus"], "natural_train.jsonl"), voc)
  for kind in cfg.shares:
    tasks.register_task(kind, os.path.join(paths["synthetic"], kind, "shard-*.jsonl"), voc)
  domains = []
  for f in sorted(os.listdir(os.path.join(paths["corpus"], "valid"))):
    domain = f[:-len(".jsonl")]
    tasks.register_task(tasks.VALID_PREFIX + domain,
                        os.path.join(paths["corpus"], "valid", f), voc)
    domains.append(domain)
  return voc, domains


def stage_train(cfg, paths):
  from synthjax import train as train_lib
  from synthjax.data import loader  # noqa: F401  (registers MixtureLoader and EvalSet with gin)
  from synthjax.models.config import ModelConfig
  from synthjax.training.config import TrainConfig
  from synthjax.training.optimizer import OptimizerConfig
  voc, domains = register(cfg, paths)
  jobs = cfg.jobs()
  for i, j in enumerate(jobs, start=1):
    t = time.time()
    if os.path.exists(os.path.join(j["model_dir"], "run.json")):
      _log(f"train {i}/{len(jobs)}: {j['size']} D={j['budget']} {j['mixture']}: done already")
      continue
    bindings = [
        f"MODEL_DIR = {j['model_dir']!r}", f"TRAIN_TOKENS = {j['budget']}",
        f"SEQ_LEN = {cfg.seq_len}", f"BATCH_SIZE = {cfg.batch_size}",
        f"ModelConfig.V = {voc.vocab_size}",
        "TrainConfig.data_source = @MixtureLoader", f"MixtureLoader.mixture = {j['mixture']!r}",
        "MixtureLoader.budget = %TRAIN_TOKENS",
        "TrainConfig.eval_sources = {" + ", ".join(
            f"{d!r}: @{d}/EvalSet" for d in domains) + "}",
        *[f"{d}/EvalSet.task = {'valid_' + d!r}" for d in domains],
        "TrainConfig.eval_batches = 2", "TrainConfig.log_every = 1000000",
        "TrainConfig.checkpoint_every = 50"]
    gin_cli.parse(["train/base.gin", f"models/{j['size']}.gin"], bindings)
    record = train_lib.train(TrainConfig(), ModelConfig(), OptimizerConfig())
    _log(f"train {i}/{len(jobs)}: {j['size']} D={j['budget']} {j['mixture']}: "
         f"loss {record['loss']:.4f} ({time.time() - t:.0f}s)")


def _run_records_digest(runs_dir: str) -> str:
  import glob
  import hashlib
  h = hashlib.sha256()
  for path in sorted(glob.glob(os.path.join(runs_dir, "**", "run.json"), recursive=True)):
    with open(path, "rb") as f:
      h.update(path.encode() + b"\0" + f.read() + b"\0")
  return h.hexdigest()


def stage_analyze(cfg, paths):
  """The report, rebuilt only when the run records changed (the fits take a few seconds)."""
  from synthjax import atomic
  from synthjax.analyze import report
  runs_dir = os.path.join(cfg.study_dir, "runs")
  digest = _run_records_digest(runs_dir)
  stamp = os.path.join(paths["report"], "run_records.sha256")
  path = os.path.join(paths["report"], "report.md")
  if os.path.exists(path) and os.path.exists(stamp):
    with open(stamp) as f:
      if f.read() == digest:
        _log(f"report: {path} (run records unchanged)")
        return path
  path = report.report([runs_dir], paths["report"], n_boot=20)
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
