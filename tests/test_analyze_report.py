import json
import os
import shutil

import pytest
from PIL import Image

from synthjax.analyze import records, report
from synthjax.errors import UserError

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "runs.jsonl")

EXPECTED_AXES = {
    "loss_vs_budget.png": "x: training tokens D (log); y: validation loss (log)",
    "speedup.png": "x: mixture tokens D (log); y: speedup D_natural / D_mixture (log)",
    "loss_vs_share.png": "x: synthetic token share (linear); y: validation loss (linear)",
    "residuals.png": "x: training tokens D (log); y: log L - log L_fit (linear)",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("report"))
  path = report.report([FIXTURE], out, n_boot=10)
  with open(os.path.join(out, "analysis.json")) as f:
    return out, open(path).read(), json.load(f)


def test_pngs_are_real_images_with_expected_axes(rendered):
  out, _, _ = rendered
  for name, axes in EXPECTED_AXES.items():
    with Image.open(os.path.join(out, name)) as im:
      assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
      assert im.info["Description"] == axes
      assert len(im.convert("L").getcolors(maxcolors=100000)) > 20  # not blank
  with Image.open(os.path.join(out, "domain_heatmap.png")) as im:
    assert im.format == "PNG"


def test_markdown_tables_hold_the_fitted_numbers(rendered):
  out, md, analysis = rendered
  fit = next(f for f in analysis["budget_fits"] if f["mixture"] == "natural")
  assert f"| natural | {report._fmt(fit['N'])} | {report._fmt(fit['E'])} | " \
         f"{report._fmt(fit['B'])} | {report._fmt(fit['beta'])} |" in md
  best = analysis["best_shares"][0]
  assert f"| {report._fmt(best['best_share'], 3)} |" in md
  # The fixture's rephrased share acts as exp(2.5 r - 3.8 r^2) more data: best r ~ 0.33.
  assert all(0.25 < b["best_share"] < 0.4 for b in analysis["best_shares"]
             if b["kind"] == "rephrased_hq")
  sp = [r for s in analysis["speedups"] if s["mixture"] == "natural+rephrased_hq@0.33"
        for r in s["rows"] if not r["extrapolated"]]
  assert sp and all(1.3 < r["speedup"] < 1.7 for r in sp)  # exp(0.41) = 1.5 by construction
  assert "## Missing" not in md
  assert os.path.exists(os.path.join(out, "report.html"))


def test_partial_grid_still_renders_and_says_what_is_missing(tmp_path):
  rows = [json.loads(l) for l in open(FIXTURE)]
  kept = [r for r in rows if not (r["N"] == 8e6 and r["mixture"] == "natural")
          and not (r["D"] == 2e8 and r["mixture"] == "rephrased_hq")]
  path = tmp_path / "partial.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in kept))
  md = open(report.report([str(path)], str(tmp_path / "out"), n_boot=0)).read()
  assert "## Missing" in md
  assert "run natural at N=8e+06, D=2e+08" in md
  assert "speedup of natural+rephrased_hq@0.33 at N=8e+06: no natural fit" in md
  assert "L(D) fit for rephrased_hq at N=2e+06: needs 3 budgets, has 2" in md
  assert os.path.exists(tmp_path / "out" / "loss_vs_budget.png")


def test_run_json_folders_are_found(tmp_path):
  rec = json.loads(open(FIXTURE).readline())
  os.makedirs(tmp_path / "runs" / "a")
  (tmp_path / "runs" / "a" / "run.json").write_text(json.dumps(rec))
  got = records.load(str(tmp_path / "runs"))
  assert len(got) == 1 and got[0]["kind"] == "natural" and got[0]["share"] == 0


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.pop("N"), "missing field 'N'"),
    (lambda r: r.update(D=-5), "N and D must be positive"),
    (lambda r: r.update(loss=float("nan")), "field 'loss' is NaN"),
    (lambda r: r.update(shares={"natural": 1.5}), "outside [0, 1]"),
])
def test_malformed_record_is_one_clear_error(tmp_path, edit, message):
  rec = json.loads(open(FIXTURE).readline())
  edit(rec)
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps(rec) + "\n")
  with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
    records.load(str(path))
  assert str(path) in str(e.value)
