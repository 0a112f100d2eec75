"""The study's configuration: the grid and its data, validated before any work starts (its own
module, so gin registers it once whether synthjax.study runs as __main__ or is imported)."""

import dataclasses
import os
from typing import Dict, List, Sequence, Tuple

import gin

from synthjax import assets, gin_cli, storage
from synthjax.errors import UserError, check_field_types
from synthjax.models.config import ModelConfig

STAGES = ("corpus", "vocab", "generate", "tokenize", "train", "analyze")
EMBEDDED = "embedded"
MODEL_MAX_LEN = ModelConfig.__dataclass_fields__["max_len"].default  # where a preset is silent


@gin.configurable
@dataclasses.dataclass(frozen=True)
class StudyConfig:
  study_dir: str
  model_sizes: Sequence[str]  # gin_configs/models presets
  budgets: Sequence[int]  # training tokens D
  shares: Dict[str, Sequence[float]]  # synthetic kind -> shares to train at
  # The natural text: 'embedded' (the demo corpus), a file glob (JSONL with a text field,
  # plain text, Parquet, ArrayRecord; local or on an object store) or 'tfds:NAME'.
  natural: str = EMBEDDED
  # Where TFDS datasets are prepared (gs://BUCKET/tensorflow_datasets): every stage reads
  # 'tfds:' sources there. On a cluster a 'tfds:' source needs it (a fresh VM has no copy).
  tfds_data_dir: str = ""
  # Evaluation domains, name -> source as above; empty with the embedded corpus: its domains.
  eval_domains: Dict[str, str] = dataclasses.field(default_factory=dict)
  eval_tokens: int = 16384  # evaluation tokens per domain, for every run
  seeds: Sequence[int] = (0,)  # each cell is trained once per seed
  styles: Dict[str, str] = dataclasses.field(
      default_factory=lambda: {"rephrased_hq": "hq", "rephrased_qa": "qa", "textbook": "textbook"}
  )
  generator: str = assets.EMBEDDED_GENERATOR  # a model dir, the embedded name, or 'tiny-random'
  generate_documents: int = 200  # natural documents each kind is made from (0: all)
  generate_overrides: Dict[str, Dict] = dataclasses.field(default_factory=dict)
  repeat_synthetic: bool = True  # read generated text more than once if needed
  vocab_size: int = 2048
  vocab_documents: int = 200_000  # natural documents the vocabulary is trained on
  seq_len: int = 128
  batch_size: int = 8
  train_bindings: Sequence[str] = ()  # gin bindings for every run, e.g. the lr
  # Beam pipeline options for the tokenize stage; empty: DirectRunner in this process.
  tokenize_options: Sequence[str] = ()
  stages: Sequence[str] = STAGES
  # One wsd run per (size, mixture, seed) at the largest budget, with a cooldown branch and
  # record at each smaller budget (Hagele et al. 2024), instead of one full run per budget.
  # Needs OptimizerConfig.schedule = 'wsd' in train_bindings or a train_gin file.
  budget_branches: bool = False
  # Tokens the natural source holds, where known before tokenizing (c4/en: about 1.5e11): a
  # dry run checks that every run's natural share fits. 0: checked after tokenization only.
  natural_tokens: int = 0
  train_gin: Sequence[str] = ()  # extra gin files for launched training jobs

  def validate(self, dry_run: bool = False):
    """Check the grid before any work; a dry run skips what only the cluster has (the
    generator checkpoint)."""
    check_field_types(self)
    if os.path.isfile(self.study_dir):  # (a bucket is not reached before the work starts)
      raise UserError(f"StudyConfig.study_dir {self.study_dir}: is a file, not a folder")
    for field in ("model_sizes", "budgets", "shares"):
      if not getattr(self, field):
        raise UserError(f"StudyConfig.{field} is empty: give at least one")
    bad = [b for b in self.budgets if isinstance(b, bool) or not isinstance(b, int) or b <= 0]
    if bad:
      raise UserError(f"StudyConfig.budgets: {bad[0]!r} is not a positive number of tokens")
    for kind, shares in self.shares.items():
      off = [
          r
          for r in shares
          if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1
      ]
      if off:
        raise UserError(f"StudyConfig.shares[{kind!r}]: {off[0]!r} is not a share in [0, 1]")
      # A mixture's name carries its shares to two decimals, and the run trains at the name's.
      inexact = [r for r in shares if abs(round(float(r), 2) - float(r)) > 1e-9]
      if inexact:
        raise UserError(
            f"StudyConfig.shares[{kind!r}]: {inexact[0]!r} has more than two "
            f"decimals; its mixture would be named and trained at "
            f"{round(float(inexact[0]), 2):.2f}: give shares in steps of 0.01"
        )
    for field in ("vocab_size", "seq_len", "batch_size", "eval_tokens"):
      if getattr(self, field) <= 0:
        raise UserError(f"StudyConfig.{field} must be positive, got {getattr(self, field)}")
    if self.generate_documents < 0:
      raise UserError(
          f"StudyConfig.generate_documents must be 0 (all) or more, got "
          f"{self.generate_documents}"
      )
    unknown = [s for s in self.stages if s not in STAGES]
    if unknown:
      raise UserError(
          f"StudyConfig.stages: unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})"
      )
    missing_style = [k for k in self.shares if k not in self.styles]
    if missing_style:
      raise UserError(
          f"StudyConfig.shares: kind {missing_style[0]!r} has no style in StudyConfig.styles"
      )
    if not any(0.0 in [float(x) for x in v] for v in self.shares.values()):
      raise UserError("the grid has no natural baseline: give some kind the share 0")
    if self.natural == EMBEDDED and storage.is_remote(self.study_dir):
      raise UserError(
          f"StudyConfig.natural: the embedded corpus is built on this machine; "
          f"a study in {self.study_dir} needs a natural source every host reads "
          "(a glob on the store or tfds:NAME)"
      )
    if self.natural_tokens:
      over = [
          r for r in self.train_runs() if r["budget"] * r["natural_share"] > self.natural_tokens
      ]
      if over:
        r = over[0]
        raise UserError(
            f"StudyConfig.budgets: the {r['mixture']} run of {r['budget']:.3g} "
            f"tokens needs {r['budget'] * r['natural_share']:.3g} natural tokens, "
            f"more than the source's {self.natural_tokens:.3g} "
            "(StudyConfig.natural_tokens); cap the budgets"
        )
    for size in self.model_sizes:
      preset = os.path.join(gin_cli.GIN_CONFIGS, "models", f"{size}.gin")
      if not os.path.exists(preset):
        raise UserError(f"StudyConfig.model_sizes: no preset {size!r} in gin_configs/models")
      with open(preset) as f:
        max_len = int(gin_cli.settings(f.read()).get("ModelConfig.max_len", MODEL_MAX_LEN))
      if self.seq_len > max_len:
        raise UserError(
            f"StudyConfig.seq_len={self.seq_len} is longer than the {size} "
            f"preset's ModelConfig.max_len={max_len}"
        )
    if not self.seeds:
      raise UserError("StudyConfig.seeds: give at least one seed")
    if self.natural != EMBEDDED and not self.eval_domains:
      raise UserError(
          f"StudyConfig.eval_domains: the natural source {self.natural!r} has no "
          "evaluation domains; name them (domain -> file glob)"
      )
    if not dry_run:
      from synthjax.data import sources

      for what, source in [("natural", self.natural), *self.eval_domains.items()]:
        if source != EMBEDDED and not source.startswith("tfds:"):
          try:
            sources.expand(source)
          except UserError as e:
            raise UserError(f"StudyConfig ({what}): {e}") from None
    if (
        not dry_run
        and self.generator not in ("tiny-random", assets.EMBEDDED_GENERATOR)
        and (not storage.exists(storage.join(self.generator, "model.json")))
    ):
      raise UserError(
          f"StudyConfig.generator: {self.generator!r} is not a synthjax model "
          "directory (no model.json)"
      )

  def mixtures(self) -> List[Tuple[str, Dict[str, float]]]:
    """(name, shares) for every distinct mixture of the grid, natural first."""
    from synthjax.data.tasks import mixture_name

    seen: Dict[str, dict] = {}
    for kind, shares in self.shares.items():
      for r in shares:
        shares_dict = {"natural": 1.0 - float(r), kind: float(r)}
        seen.setdefault(mixture_name(shares_dict), shares_dict)
    return sorted(seen.items(), key=lambda kv: (kv[0] != "natural", kv[0]))

  def jobs(self) -> List[dict]:
    """The training grid: one job per size x budget x mixture x seed. `cell_dir` names the
    cell; the study appends the key of the job's settings to it."""
    out = []
    for size in self.model_sizes:
      for budget in self.budgets:
        for name, shares in self.mixtures():
          for seed in self.seeds:
            out.append(
                {
                    "size": size,
                    "budget": int(budget),
                    "mixture": name,
                    "seed": int(seed),
                    "kinds": sorted(k for k, v in shares.items() if v > 0),
                    "natural_share": shares.get("natural", 0.0),
                    "cell_dir": os.path.join(
                        self.study_dir,
                        "runs",
                        size,
                        str(budget),
                        name.replace("@", "_at_").replace("+", "_plus_"),
                    ),
                }
            )
    return out

  def train_runs(self) -> List[dict]:
    """The training runs that serve the grid: one per job, or with budget_branches one per
    (size, mixture, seed) at the largest budget whose `branches` are the smaller budgets."""
    if not self.budget_branches:
      return [dict(j, branches=[]) for j in self.jobs()]
    top = max(int(b) for b in self.budgets)
    smaller = sorted({int(b) for b in self.budgets} - {top})
    return [dict(j, branches=smaller) for j in self.jobs() if j["budget"] == top]
