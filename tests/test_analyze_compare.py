"""Speedup and corpus diagnostics against answers known in closed form."""

import math

import pytest

from synthjax.analyze import diagnostics, speedup


def _law(E, B, beta, D_range, replicates=()):
  """An L(D) fit as laws.fit_law returns it (theta = log E, log B, beta)."""
  theta = [math.log(E), math.log(B), beta]
  return {"theta": theta, "replicate_thetas": list(replicates) or [theta], "D_range": list(D_range)}


def test_speedup_of_a_curve_with_k_times_more_effective_data_is_k():
  k = 4.0
  natural = _law(2.0, 400.0, 0.3, (1e6, 1e10))
  mixture = _law(2.0, 400.0 / k**0.3, 0.3, (1e7, 1e8))  # L_mix(D) = L_nat(k D)
  rows = speedup.speedup_rows(natural, mixture, [1e7, 1e8, 1e9])
  for r in rows:
    assert r["speedup"] == pytest.approx(k, rel=1e-9)
    assert r["loss"] == pytest.approx(2.0 + 400.0 / (k * r["D"]) ** 0.3)
  assert [r["extrapolated"] for r in rows] == [False, False, True]


def test_speedup_interval_spans_the_replicates():
  natural = _law(2.0, 400.0, 0.3, (1e6, 1e10))
  reps = [[math.log(2.0), math.log(400.0 / k**0.3), 0.3] for k in (2.0, 3.0, 4.0, 5.0, 6.0)]
  mixture = _law(2.0, 400.0 / 4.0**0.3, 0.3, (1e6, 1e10), reps)
  natural["replicate_thetas"] = [natural["theta"]] * len(reps)
  row = speedup.speedup_rows(natural, mixture, [1e8])[0]
  lo, hi = row["interval"]
  assert 2.0 - 1e-9 <= lo < row["speedup"] < hi <= 6.0 + 1e-9


def test_speedup_is_infinite_below_natural_floor():
  natural = _law(2.5, 400.0, 0.3, (1, 1e13))
  mixture = _law(2.0, 400.0, 0.3, (1, 1e13))
  row = speedup.speedup_rows(natural, mixture, [1e12])[0]
  assert row["loss"] < 2.5 and math.isinf(row["speedup"]) and row["extrapolated"]
  # what the report prints instead: natural's fitted range supports speedup > 1e13 / 1e12
  assert row["natural_reach"] == "beyond" and row["bound"] == pytest.approx(10.0)


def test_corpus_diagnostics_on_known_texts():
  natural = ["the cat sat on the mat", "a dog ran in the park"]
  assert diagnostics.compare(natural, natural)["unigram_kl_syn_nat"] == pytest.approx(0.0)
  repetitive = ["the cat the cat the cat the cat"] * 2
  out = diagnostics.compare(natural, repetitive)
  assert out["unigram_kl_syn_nat"] > 0.1 and out["bigram_kl_syn_nat"] > 0.1
  assert out["vocab_coverage"] == pytest.approx(2 / 10)  # 'the', 'cat' of 10 natural types
  assert out["synthetic/distinct_1"] == pytest.approx(2 / 16)
  assert out["synthetic/compression_ratio"] < out["natural/compression_ratio"]
  novel = diagnostics.compare(natural, ["the cat sat on a log"])
  # 3-grams of the synthetic text: (the cat sat) (cat sat on) are natural, (sat on a) (on a log) not
  assert novel["novel_3gram_share"] == pytest.approx(0.5)


def _grid_records(loss, mixtures, Ns, Ds, seeds=3, sd=0.002, seed=0):
  """Run records of a made-up grid: loss(mixture, N, D) plus seed noise."""
  import numpy as np

  rng = np.random.default_rng(seed)
  return [
      {
          "N": N,
          "D": D,
          "mixture": m,
          "kind": k,
          "share": s,
          "seed": i,
          "loss": loss(m, N, D) + rng.normal(0, sd),
          "domains": {},
          "docs": {},
          "baselines": {},
          "bits_per_byte": {},
          "repeats": {},
          "path": "made-up",
      }
      for (m, k, s) in mixtures
      for N in Ns
      for D in Ds
      for i in range(seeds)
  ]


def test_speedup_net_of_generation_compute_recovers_its_closed_form():
  """A mixture whose data acts as k times more tokens, and a generator costing f FLOPs per
  synthetic token: compute speedup k / (1 + f s / 6N), break-even f s / (6 N (k - 1))."""
  from synthjax.analyze import report

  k, share, N, f = 2.0, 0.5, 1e7, 4e8  # f s / 6N = 10/3: the mixture does not pay alone
  mixtures = [("natural", "natural", 0.0), ("mix", "hq", share)]
  loss = lambda m, N, D: 2.0 + 400.0 / ((k if m == "mix" else 1.0) * D) ** 0.3
  Ds = [1e7 * 2**i for i in range(7)]
  out = report.analyze(
      _grid_records(loss, mixtures, [N], Ds),
      n_boot=200,
      n_fit_boot=50,
      generation={"hq": {"flops_per_token": f}},
  )
  rows = [r for s in out["speedups"] for r in s["rows"] if r["compute_speedup"] is not None]
  assert len(rows) >= 4
  for r in rows:
    assert r["speedup"] == pytest.approx(k, rel=0.05)
    assert r["compute_speedup"] == pytest.approx(r["speedup"] / (1 + f * share / (6 * N)))
    assert r["compute_interval"][0] <= k / (1 + f * share / (6 * N)) <= r["compute_interval"][1]
    assert r["break_even_runs"] == pytest.approx(f * share / (6 * N * (k - 1)), rel=0.1)
    lo, hi = r["break_even_interval"]
    assert lo <= f * share / (6 * N * (k - 1)) <= hi
  # without a cost, the report says what is missing
  out = report.analyze(_grid_records(loss, mixtures, [N], Ds), n_boot=50, n_fit_boot=5)
  assert any("net of generation compute: no generator cost for hq" in m for m in out["missing"])


def test_compute_never_pays_without_a_token_speedup():
  from synthjax.analyze import compute

  assert compute.break_even_runs(0.9, 1e7, 1e9, 0.3, {"flops_per_token": 1e9}) == math.inf
  assert compute.compute_speedup(2.0, 1e7, 1e9, 0.3, {"flops_per_token": 0.0}) == 2.0
  # a set read twice was generated once: half the generation charged
  once = compute.compute_speedup(2.0, 1e7, 1e9, 0.5, {"flops_per_token": 6e7})
  twice = compute.compute_speedup(2.0, 1e7, 1e9, 0.5, {"flops_per_token": 6e7, "set_tokens": 2.5e8})
  assert once == pytest.approx(2.0 / 1.5) and twice == pytest.approx(2.0 / 1.25)


def test_decision_accuracy_finds_the_scale_where_the_order_settles():
  """Three mixtures whose order at N below 1e7 is the reverse of their order above it: every
  pair agrees with the largest scale from 1e7 up (accuracy 1) and none below (accuracy 0)."""
  import numpy as np

  from synthjax.analyze import decision, noise

  mixtures = [(f"m{i}", "k", 0.1 * i) for i in range(3)]
  gain = {"m0": 0.0, "m1": 0.05, "m2": 0.10}
  loss = lambda m, N, D: (3.0 + 50 / D**0.2 - gain[m] * np.log10(N / 3e6))
  Ns, Ds = [1e6, 3e6, 1e7, 3e7, 1e8], [1e8, 1e9]
  cells = noise.bootstrap_cells(_grid_records(loss, mixtures, Ns, Ds, sd=0.003), n_boot=300)
  rows = {(a["N"], a["D"]): a for a in decision.accuracy(cells)}
  assert (1e8, 1e9) not in rows and rows[(1e8, 1e8)]["target"] == {"N": 1e8, "D": 1e9}
  for (N, _), a in rows.items():
    if N >= 1e7:
      assert a["accuracy"] == 1.0 and a["interval"][0] >= 0.6
    elif N <= 1e6:
      assert a["accuracy"] == 0.0 and a["interval"][1] <= 0.4
  # at N = 3e6 the three are tied up to noise: the interval spans chance
  lo, hi = rows[(3e6, 1e8)]["interval"]
  assert lo < 0.5 < hi
