"""seqio Tasks per data kind and Mixtures per synthetic TOKEN share.

Kinds: natural, rephrased_hq, rephrased_qa, textbook, and any task a user registers. A mixture
name lists its components with shares; the first takes the remainder:

    natural                                 all natural
    natural+rephrased_hq@0.33               67% natural, 33% HQ rephrased (token shares)
    natural+rephrased_hq@0.2+textbook@0.1   a three-way mixture

seqio mixture rates count examples, so each component's rate is its token share divided by
its mean tokens per example (from its tokenized copy's manifest). The training loader
mixes after tokenization and meets the token shares exactly.
"""

import functools
import re
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import gin

from synthjax import quiet

quiet.import_tensorflow()  # seqio loads it: its start-up lines stay out of a binary's output
import seqio

from synthjax.data import sources
from synthjax.errors import UserError

KINDS = ("natural", "rephrased_hq", "rephrased_qa", "textbook")
VALID_PREFIX = "valid_"
_SHARE = re.compile(r"^(?P<task>[A-Za-z0-9_.:-]+)@(?P<share>[^@+]+)$")


def output_features(vocabulary: seqio.Vocabulary):
  return {"targets": seqio.Feature(vocabulary, add_eos=True, dtype=__import__("tensorflow").int32)}


def register_task(
    name: str,
    source: Union[str, seqio.DataSource],
    vocabulary: seqio.Vocabulary,
    text_field: str = "text",
) -> seqio.Task:
  """A task reading text (a file glob, 'tfds:NAME', or any seqio DataSource), tokenized,
  EOS-terminated. A task from a glob or a TFDS name keeps that spec (`synthjax_spec`), so a
  Beam worker can register the same task."""
  spec = None
  if isinstance(source, str) and getattr(vocabulary, "synthjax_path", None):
    spec = {"source": source, "vocabulary": vocabulary.synthjax_path, "text_field": text_field}
  if isinstance(source, str) and source.startswith("tfds:"):
    source = sources.tfds_source(source[len("tfds:") :])
  elif isinstance(source, str):
    source = sources.local_source(source, text_field)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  task = seqio.TaskRegistry.add(
      name,
      source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos,
      ],
      output_features=output_features(vocabulary),
  )
  task.synthjax_spec = spec
  return task


def parse_mixture(name: str) -> Dict[str, float]:
  """'a+b@0.3+c@0.1' -> {'a': 0.6, 'b': 0.3, 'c': 0.1}; checks shares and task names."""
  parts = name.split("+")
  shares: Dict[str, Optional[float]] = {}
  for i, part in enumerate(parts):
    m = _SHARE.match(part)
    task = m.group("task") if m else part
    if task in shares:
      raise UserError(f"mixture {name!r}: {task!r} is named twice; give each task once")
    if m:
      try:
        share = float(m.group("share"))
      except ValueError:
        raise UserError(f"mixture {name!r}: share {m.group('share')!r} is not a number") from None
      if not 0.0 <= share <= 1.0:
        raise UserError(f"mixture {name!r}: share {share} of {m.group('task')!r} is outside [0, 1]")
      shares[m.group("task")] = share
    elif i == 0 and "@" not in part:
      shares[part] = None  # takes the remainder
    else:
      raise UserError(f"mixture {name!r}: cannot read component {part!r} (expected TASK@SHARE)")
  given = sum(s for s in shares.values() if s is not None)
  first = next(iter(shares))
  if shares[first] is None:
    if given > 1.0 + 1e-9:
      raise UserError(f"mixture {name!r}: shares add up to {given:g} > 1")
    shares[first] = 1.0 - given
  elif abs(given - 1.0) > 1e-6:
    raise UserError(f"mixture {name!r}: shares add up to {given:g}, not 1")
  for task in shares:
    if task not in seqio.TaskRegistry.names():
      raise UserError(
          f"mixture {name!r}: unknown task {task!r} (registered: "
          f"{', '.join(sorted(seqio.TaskRegistry.names())) or 'none'})"
      )
  return {t: float(s) for t, s in shares.items() if s is not None and s > 0}


def mixture_name(shares: Mapping[str, float]) -> str:
  """Canonical name of a share dict: natural (else the alphabetically first task) leads and
  takes the remainder; the others carry their shares to two decimals."""
  items = sorted(shares.items(), key=lambda kv: (kv[0] != "natural", kv[0]))
  items = [(t, s) for t, s in items if s > 0]
  if len(items) == 1:
    return items[0][0]
  head = items[0][0]
  return "+".join([head] + [f"{t}@{s:.2f}" for t, s in items[1:]])


def register_mixture(name: str) -> seqio.Mixture:
  """Register (or return) the mixture a name describes, with token-share-derived rates."""
  shares = parse_mixture(name)
  if name in seqio.MixtureRegistry.names():
    return seqio.get_mixture_or_task(name)
  from synthjax.data import token_cache

  def rate_fn(share):
    return lambda task: share / max(token_cache.stats(task.name)["mean_tokens"], 1e-9)

  return seqio.MixtureRegistry.add(name, [(t, rate_fn(s)) for t, s in shares.items()])


def get_components(name: str) -> Dict[str, float]:
  """Token shares of a mixture or a single task name."""
  if name in seqio.TaskRegistry.names():
    return {name: 1.0}
  register_mixture(name)
  return parse_mixture(name)


@gin.configurable
def register_study_data(
    vocabulary_path: str = gin.REQUIRED,
    kinds: Mapping[str, str] = gin.REQUIRED,
    validation: Optional[Mapping[str, str]] = None,
    shares: Sequence[float] = (1 / 3, 2 / 3),
) -> Dict[str, list]:
  """Register one task per kind (kind -> file glob), a validation task per domain
  (VALID_PREFIX + domain), and natural+kind@share mixtures for every synthetic kind."""
  from synthjax.data.vocab import load_vocabulary

  vocab = load_vocabulary(vocabulary_path)
  for kind, pattern in kinds.items():
    register_task(kind, pattern, vocab)
  for domain, pattern in (validation or {}).items():
    register_task(VALID_PREFIX + domain, pattern, vocab)
  mixtures = []
  if "natural" in kinds:
    for kind in kinds:
      if kind != "natural":
        for share in shares:
          mixtures.append(register_mixture(f"natural+{kind}@{share:.2f}").name)
  return {"tasks": sorted(kinds), "mixtures": mixtures}


@gin.configurable
def register_tasks(register: Optional[Callable] = None) -> None:
  """For binaries that only need tasks registered (the tokenizer):
  `register_tasks.register = @register_study_data` (or any callable that registers them)."""
  if register is not None:
    register()
