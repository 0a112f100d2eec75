import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from synthjax.analyze import scaling
from synthjax.analyze.__main__ import fit_csv
from synthjax.errors import UserError

REFERENCE = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "shared",
    "reference",
    "chinchilla_svg_extracted_data.csv",
)


def test_recovers_a_known_joint_law_from_noisy_points():
  rng = np.random.default_rng(0)
  N, D = [a.ravel() for a in np.meshgrid(np.geomspace(1e7, 3e9, 6), np.geomspace(1e9, 3e11, 6))]
  true = dict(E=1.7, A=400.0, alpha=0.34, B=1500.0, beta=0.30)
  L = true["E"] + true["A"] / N ** true["alpha"] + true["B"] / D ** true["beta"]
  L = L * np.exp(rng.normal(0, 0.003, L.shape))
  fit = scaling.fit({"N": N, "D": D}, L)
  p = fit.params
  assert p["E"] == pytest.approx(true["E"], rel=0.05)
  assert p["alpha"] == pytest.approx(true["alpha"], abs=0.04)
  assert p["beta"] == pytest.approx(true["beta"], abs=0.04)
  pred = fit.predict(N=N, D=D)
  assert np.abs(np.log(pred / L)).max() < 0.02  # fits the points to the noise level


def test_recovers_a_budget_law_and_its_interval_brackets_it():
  from synthjax.analyze import laws

  rng = np.random.default_rng(1)
  D = np.geomspace(1e6, 1e9, 8)
  truth = 2.0 + 300.0 / D**0.3
  L = truth * np.exp(rng.normal(0, 0.002, D.shape))
  reps = L * np.exp(rng.normal(0, 0.002, (40, len(D))))  # replicates at the noise level
  fit = laws.fit_law({"D": D}, L, reps, holdout_on="D", n_fit_boot=40)
  assert fit["E"] == pytest.approx(2.0, rel=0.05)
  assert fit["beta"] == pytest.approx(0.3, abs=0.03)
  lo, hi = fit["intervals"]["beta"]
  assert lo <= fit["beta"] <= hi and hi - lo < 0.1
  assert fit["holdout"]["at"] == 1e9 and fit["holdout"]["relative_error"] < 0.01
  assert scaling.tokens_for_loss(dict(E=2.0, B=300.0, beta=0.3), 1.9) == float("inf")
  target = 2.0 + 300.0 / 1e7**0.3
  assert scaling.tokens_for_loss(dict(E=2.0, B=300.0, beta=0.3), target) == pytest.approx(1e7)


def test_fewer_points_than_a_law_supports_get_no_fit_and_no_holdout():
  from synthjax.analyze import laws

  assert laws.min_points(["D"]) == 5 and laws.min_points(["N", "D"]) == 7
  D = np.geomspace(1e6, 1e9, 5)
  L = 2.0 + 300.0 / D**0.3
  fit = laws.fit_law({"D": D}, L, L[None], holdout_on="D", n_fit_boot=1)
  assert fit["holdout"] is None  # 4 points left would not support it


def _reference():
  if not os.path.exists(REFERENCE):
    pytest.skip("../shared/reference is not present")
  with open(REFERENCE) as f:
    rows = list(csv.DictReader(f))
  N = np.array([float(r["Model Size"]) for r in rows])
  D = np.array([float(r["Training FLOP"]) for r in rows]) / (6 * N)
  L = np.array([float(r["loss"]) for r in rows])
  keep = np.argsort(L, kind="stable")[:-5]  # drop the 5 highest-loss points
  return N[keep], D[keep], L[keep]


def _sig3(x):
  return float(f"{x:.3g}")


def test_reproduces_besiroglu_approach3_on_chinchilla_data():
  N, D, L = _reference()
  fit = scaling.fit({"N": N, "D": D}, L)
  p = fit.params
  assert _sig3(p["E"]) == _sig3(1.8172)
  assert _sig3(p["alpha"]) == _sig3(0.34731)
  assert _sig3(p["beta"]) == _sig3(0.36718)
  assert p["A"] == pytest.approx(477.84, rel=0.02)
  assert p["B"] == pytest.approx(2143.86, rel=0.10)
  assert fit.objective == pytest.approx(1.01827e-3, rel=1e-3)
  hoffmann = scaling.theta_from_params(
      ["N", "D"], dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
  )
  assert scaling.objective(hoffmann, {"N": N, "D": D}, L) > fit.objective * 1.2


def test_fit_cli_with_flop_column_prints_json(tmp_path):
  N, D, L = _reference()
  path = tmp_path / "c.csv"
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["params", "flops", "loss"])
    w.writerows(zip(N, 6 * N * D, L))
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "synthjax.analyze",
          "fit",
          "--csv",
          str(path),
          "--n_col",
          "params",
          "--flop_col",
          "flops",
          "--loss_col",
          "loss",
      ],
      capture_output=True,
      text=True,
      check=True,
  )
  out = json.loads(proc.stdout)
  assert set(out) >= {"E", "A", "B", "alpha", "beta", "objective"}
  assert _sig3(out["E"]) == _sig3(1.8172)


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"n": 1e6, "loss": 3.0}] * 6, "missing column 'd'"),
        (
            [{"n": -1, "d": 1e9, "loss": 3.0}] + [{"n": 1e6, "d": 1e9, "loss": 3.0}] * 5,
            "N must be positive",
        ),
        ([{"n": 1e6, "d": 0, "loss": 3.0}] * 6, "D must be positive"),
        ([{"n": 1e6, "d": 1e9, "loss": "nan"}] * 6, "column 'loss' is NaN"),
        ([{"n": 1e6, "d": 1e9, "loss": 3.0}] * 4, "4 points cannot determine 5 parameters"),
    ],
)
def test_malformed_fit_input_is_one_clear_error(tmp_path, rows, message):
  path = tmp_path / "bad.csv"
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  with pytest.raises(UserError, match=message):
    fit_csv(str(path), "n", "loss", d_col="d")
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "synthjax.analyze",
          "fit",
          "--csv",
          str(path),
          "--n_col",
          "n",
          "--d_col",
          "d",
          "--loss_col",
          "loss",
      ],
      capture_output=True,
      text=True,
  )
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1 and message in lines[0]


def test_laws_say_so_on_rising_flat_and_floorless_data():
  from synthjax.analyze import laws

  rng = np.random.default_rng(3)
  D = np.geomspace(1e4, 3e5, 6)

  def fit(truth):
    point = truth + rng.normal(0, 0.01, D.shape)
    reps = point + rng.normal(0, 0.01, (200, len(D)))  # replicates at the noise level
    return laws.fit_law({"D": D}, point, reps, None, n_fit_boot=20)

  assert "rejected" in fit(3.0 + 1e-3 * D**0.5)  # rising: the law does not apply
  flat = [fit(np.full(len(D), 3.0)) for _ in range(50)]  # noise only: no law in most draws
  assert np.mean(["rejected" in f for f in flat]) >= 0.9
  floorless = fit(20.0 / D**0.1)  # a pure power law: E cannot be told from 0
  assert "E not identified" in floorless["note"] and "E" not in floorless["intervals"]
  assert floorless["beta"] == pytest.approx(0.1, abs=0.03)
