"""Speedup and corpus diagnostics against answers known in closed form."""
import math

import pytest

from synthjax.analyze import diagnostics, speedup


def _law(E, B, beta, D_range, replicates=()):
  """An L(D) fit as laws.fit_law returns it (theta = log E, log B, beta)."""
  theta = [math.log(E), math.log(B), beta]
  return {"theta": theta, "replicate_thetas": list(replicates) or [theta],
          "D_range": list(D_range)}


def test_speedup_of_a_curve_with_k_times_more_effective_data_is_k():
  k = 4.0
  natural = _law(2.0, 400.0, 0.3, (1e6, 1e10))
  mixture = _law(2.0, 400.0 / k ** 0.3, 0.3, (1e7, 1e8))  # L_mix(D) = L_nat(k D)
  rows = speedup.speedup_rows(natural, mixture, [1e7, 1e8, 1e9])
  for r in rows:
    assert r["speedup"] == pytest.approx(k, rel=1e-9)
    assert r["loss"] == pytest.approx(2.0 + 400.0 / (k * r["D"]) ** 0.3)
  assert [r["extrapolated"] for r in rows] == [False, False, True]


def test_speedup_interval_spans_the_replicates():
  natural = _law(2.0, 400.0, 0.3, (1e6, 1e10))
  reps = [[math.log(2.0), math.log(400.0 / k ** 0.3), 0.3] for k in (2.0, 3.0, 4.0, 5.0, 6.0)]
  mixture = _law(2.0, 400.0 / 4.0 ** 0.3, 0.3, (1e6, 1e10), reps)
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
