"""The end-to-end study on one machine: corpus -> vocabulary -> synthetic data -> tokenized
copies (Beam) -> mixtures -> a grid of models -> per-domain evaluation -> analysis report.

    python -m synthjax.study --gin_file=study/smoke.gin [--gin.STUDY_DIR=studies/smoke]

Every stage writes under STUDY_DIR and is keyed by what it was made from, so a rerun skips
finished work and a killed study resumes: the corpus and vocabulary are written atomically,
generation resumes per shard, each training run resumes from its checkpoint (and a finished
one returns its run record), and the report is rebuilt from the run records.
"""

import contextlib
import glob
import hashlib
import os
import sys
import time
from typing import Optional

import gin

from synthjax import gin_cli, lease, plan, storage
from synthjax.progress import Rate
from synthjax.study_config import EMBEDDED, StudyConfig


def _log(msg: str) -> None:
  print(f"study: {msg}", file=sys.stderr, flush=True)


def stage_corpus(study: plan.Study):
  cfg, paths = study.cfg, study.paths
  if cfg.natural != EMBEDDED:
    _log(f"corpus: natural text from {cfg.natural}; {len(cfg.eval_domains)} evaluation domains")
    return
  from synthjax.data import demo_corpus

  manifest = demo_corpus.build(paths["corpus"])
  _log(
      f"corpus: {manifest['files']['natural_train']['documents']} training documents, "
      f"{len(manifest['domains'])} evaluation domains"
  )


def stage_vocab(study: plan.Study):
  from synthjax.data import sources, vocab

  cfg, paths, data = study.cfg, study.paths, study.data
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


def stage_generate(study: plan.Study):
  """Each kind's synthetic text; on a cluster every host of the job runs this and takes its
  own part of the corpus (SYNTHJAX_PROCESS_ID of SYNTHJAX_NUM_PROCESSES)."""
  from synthjax.generate import job

  generator = plan.generator_dir(study.cfg, study.paths)
  for kind, (out_dir, _, settings) in study.data.synthetic.items():
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


def stage_tokenize(study: plan.Study):
  """Every task the grid reads, tokenized once into the study's shared copies (Beam)."""
  from synthjax.data import tokenize
  from synthjax.generate import output as generate_output

  for kind, (out_dir, _, _) in study.data.synthetic.items():
    generate_output.require_complete(out_dir, kind)
  _, data = plan.register(study)
  gin.bind_parameter("cache_dir.path", study.paths["tokens"])
  names = ["natural", *data.synthetic, *(f"valid_{d}" for d in data.domains)]
  tokenize.tokenize(names, study.cfg.tokenize_options)


def stage_train(study: plan.Study):
  from synthjax import train as train_lib
  from synthjax.models.config import ModelConfig
  from synthjax.training.config import TrainConfig
  from synthjax.training.optimizer import OptimizerConfig

  plan.check_budgets(study)
  runs, jobs = study.cfg.train_runs(), plan.train_jobs(study)
  tokens = Rate(sum(r["budget"] for r in runs))
  for i, (r, j) in enumerate(zip(runs, jobs), start=1):
    t = time.time()
    what = f"train {i}/{len(jobs)}: {r['size']} D={r['budget']} {r['mixture']} seed {r['seed']}"
    if all(storage.exists(p) for p in j.records):
      _log(f"{what}: done already")
      tokens.skip(r["budget"])
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
    train_cfg = gin_cli.call_configured(TrainConfig)  # its required fields come from the job
    record = train_lib.train(train_cfg, ModelConfig(), OptimizerConfig())
    tokens.add(r["budget"])
    _log(f"{what}: loss {record['loss']:.4f} ({time.time() - t:.1f}s; ETA {tokens.eta()})")


def _report_digest(record_files) -> str:
  """What the report depends on: the run records (and the generation manifests) and the
  analysis code that reads them (this file too: it prices the generation)."""
  from synthjax import analyze

  code = sorted(glob.glob(os.path.join(os.path.dirname(analyze.__file__), "*.py"))) + [__file__]
  h = hashlib.sha256()
  for path in list(record_files) + code:
    h.update(path.encode() + b"\0" + storage.read_bytes(path) + b"\0")
  return h.hexdigest()


def stage_analyze(study: plan.Study):
  """The report over this grid's run records (collected from wherever the runs wrote them),
  rebuilt only when the records or the analysis code changed (the fits and bootstraps take a
  while)."""
  from synthjax.analyze import report

  paths = study.paths
  records = plan.record_paths(study)
  found = [p for p in records if storage.exists(p)]
  if len(found) < len(records):
    _log(f"report: {len(records) - len(found)} of {len(records)} runs have no record yet")
  synthetic = {
      k: d
      for k, (d, _, _) in study.data.synthetic.items()
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
      generation=_generation_costs(study, synthetic),
  )
  storage.write_text(stamp, digest)
  _log(f"report: {path}")
  return path


def _generation_costs(study: plan.Study, synthetic: dict) -> dict:
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
  gin.bind_parameter("cache_dir.path", study.paths["tokens"])
  plan.register(study)
  params = flops.param_count(
      store.load_config(job.resolve_generator(plan.generator_dir(study.cfg, study.paths)))
  )
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
  study = plan.Study(cfg)  # its data is built at first use, after the corpus stage
  storage.makedirs(cfg.study_dir)
  t0 = time.time()
  report_path: Optional[str] = None
  with _hold(cfg.study_dir):
    for stage in cfg.stages:
      t = time.time()
      _log(f"stage {stage} ...")
      out = STAGES[stage](study)
      report_path = out or report_path
      _log(f"stage {stage} done in {time.time() - t:.0f}s")
  _log(f"finished in {time.time() - t0:.0f}s")
  return report_path


def _hold(study_dir: str):
  """The study folder's lease (one study writes there at a time): taken here, or held already
  by the Ray driver that started this process to run one stage, which passes its owner id
  down in plan.LEASE_ENV."""
  owner = os.environ.get(plan.LEASE_ENV)
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
