import csv
import json
import os
import re

import pytest
from PIL import Image

from synthjax.analyze import records, report
from synthjax.analyze.numbers import fmt
from synthjax.errors import UserError

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "runs.jsonl")

EXPECTED_AXES = {
    "loss_vs_budget.png": "x: training tokens D (log); y: validation loss (nats/token) (linear)",
    "speedup.png": "x: mixture tokens D (log); y: speedup D_natural / D_mixture (log)",
    "loss_vs_share.png": "x: synthetic token share (linear); y: validation loss (nats/token) "
    "(linear)",
    "residuals.png": "x: training tokens D (log); y: log L - log L_fit (linear)",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("report"))
  path = report.report([FIXTURE], out, n_boot=400, n_fit_boot=10)
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
  with open(os.path.join(out, "fits_budget.csv")) as f:
    row = next(r for r in csv.DictReader(f) if r["mixture"] == "natural")
  assert float(row["N"]) == fit["N"] and float(row["E"]) == fit["E"]
  # the first page: per size, the 1/3 mixture's speedup at each measured budget
  assert md.index("## Answers") < md.index("## Missing")
  sp = next(
      r
      for s in analysis["speedups"]
      if s["mixture"] == "natural+rephrased_hq@0.33" and s["N"] == 2e6
      for r in s["rows"]
      if r["D"] == 1e7
  )
  assert f"| natural+rephrased_hq@0.33 | {fmt(sp['speedup'], 3)} [{fmt(sp['interval'][0], 3)}" in md
  # The fixture's rephrased share acts as exp(2.5 r - 3.8 r^2) more data: on the grid
  # 0, 1/3, 2/3, 1 the best is 1/3, and both ends are clearly worse.
  hq = [b for b in analysis["best_shares"] if b["kind"] == "rephrased_hq"]
  assert len(hq) == 30
  assert all(b["verdict"] == "interior" and b["interval"][0] < 1 / 3 < b["interval"][1] for b in hq)
  sp = [
      r
      for s in analysis["speedups"]
      if s["mixture"] == "natural+rephrased_hq@0.33"
      for r in s["rows"]
      if not r["extrapolated"]
  ]
  assert sp and all(1.3 < r["speedup"] < 1.7 for r in sp)  # exp(0.41) = 1.5 by construction
  assert all(r["interval"][0] <= r["speedup"] <= r["interval"][1] for r in sp)
  # 5 sizes support the model law; its holdout needs a sixth.
  assert len(analysis["model_fits"]) == 5 * 6
  assert "L(N) holdout error: needs 6 points" in md
  assert all(
      f["holdout"] and f["holdout"]["relative_error"] < 0.01 for f in analysis["budget_fits"]
  )
  found = {(f["mixture"], f["N"]): f for f in analysis["findings"]}
  assert all(found[("rephrased_hq", n)]["verdict"] == "higher" for n in analysis["grid"]["N"])
  assert all(
      found[("natural+rephrased_hq@0.33", n)]["verdict"] == "lower" for n in analysis["grid"]["N"]
  )
  # the HTML page is the Markdown rendered: every table and plot of it
  page = open(os.path.join(out, "report.html")).read()
  assert page.count("<table>") == sum(line.startswith("|---") for line in md.splitlines()) > 0
  assert page.count("<img") == md.count("![") > 0


def test_partial_grid_still_renders_and_says_what_is_missing(tmp_path):
  rows = [json.loads(l) for l in open(FIXTURE)]
  kept = [
      r
      for r in rows
      if r["N"] in (2e6, 8e6)
      and not (r["N"] == 8e6 and r["mixture"] == "natural")
      and not (r["D"] >= 8e7 and r["mixture"] == "rephrased_hq")
  ]
  path = tmp_path / "partial.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in kept))
  out = report.analyze(records.load(str(path)), n_boot=200, n_fit_boot=0)
  md = open(report.write(out, str(tmp_path / "out"))).read()
  assert "## Missing" in md
  assert "run natural at N=8e+06, D=1e+07" in md
  assert "speedup of natural+rephrased_hq@0.33 at N=8e+06: no natural L(D) fit" in md
  # 3 budgets cannot support a 3-parameter law: listed, not fitted
  assert (
      "L(D) fit: needs 5 points (parameters + 2), not shown for rephrased_hq at N=2e+06 (3)" in md
  )
  assert not [f for f in out["budget_fits"] if f["mixture"] == "rephrased_hq"]
  assert os.path.exists(tmp_path / "out" / "loss_vs_budget.png")


def test_one_seed_and_no_document_losses_call_no_difference(tmp_path):
  rows = [json.loads(l) for l in open(FIXTURE)]
  one_seed = [r for r in rows if r["seed"] == 0 and r["N"] == 2e6]
  path = tmp_path / "one.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in one_seed))
  out = report.analyze(records.load(str(path)), n_boot=100, n_fit_boot=0)
  assert any("noise estimate" in m for m in out["missing"])
  assert all(f["verdict"] == "not resolved" for f in out["findings"])
  assert all(b["verdict"] == "not resolved" for b in out["best_shares"])
  md = open(report.write(out, str(tmp_path / "out"))).read()
  assert "No noise estimate" in md
  # no zero-width interval and no infinite estimate anywhere in the report or its tables
  text = md + "".join(open(p).read() for p in (tmp_path / "out").glob("*.csv"))
  assert "inf" not in text.replace("information", "")
  intervals = re.findall(r"\[(-?[\d.e+-]+), (-?[\d.e+-]+)\]", md)
  assert not [(lo, hi) for lo, hi in intervals if lo == hi]
  for name in ("cells.csv", "findings.csv", "domain_gaps.csv", "speedups.csv"):
    with open(tmp_path / "out" / name) as f:
      assert all(r["lo" if "lo" in r else "loss_lo"] == "" for r in csv.DictReader(f)), name


@pytest.mark.parametrize(
    "field, values", [("vocabulary", ("3f2a", "9c01")), ("seq_len", (512, 1024))]
)
def test_runs_that_are_not_comparable_are_refused_in_one_line(tmp_path, field, values):
  rows = [json.loads(l) for l in open(FIXTURE)]
  for i, r in enumerate(rows):
    r[field] = values[i % 2]
  path = tmp_path / "mixed.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(
      UserError,
      match=rf"runs of different .* are not comparable: "
      rf"{path}:1 has {field} {values[0]}, {path}:2 has "
      rf"{values[1]}",
  ) as e:
    report.report([str(path)], str(tmp_path / "out"))
  assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_runs_evaluated_on_different_documents_are_refused(tmp_path):
  rows = [json.loads(l) for l in open(FIXTURE)]
  for r in rows:  # every run evaluated on the same two documents of each domain ...
    r["eval"] = {d: {"doc_tokens": [512, 512]} for d in r["losses"]}
  rows[1]["eval"]["code"]["doc_tokens"] = [256, 256]  # ... but one, on shorter ones
  path = tmp_path / "two_sets.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(UserError, match="runs of different evaluation sets are not comparable"):
    report.analyze(records.load(str(path)))


def test_csv_records_with_seed_and_kind_columns(tmp_path):
  path = tmp_path / "runs.csv"
  lines = ["N,D,mixture,kind,share,seed,loss"]
  for seed, noise in ((0, 0.01), (1, -0.01), (2, 0.0)):
    for share, loss in ((0, 3.0), (0.5, 3.2), (1, 3.4)):
      name = "natural" if share == 0 else f"natural+mine@{share}"
      lines.append(
          f"1e6,1e7,{name},{'natural' if share == 0 else 'mine'},{share},{seed},{loss + noise}"
      )
  path.write_text("\n".join(lines) + "\n")
  recs = records.load(str(path))
  assert sorted({r["seed"] for r in recs}) == [0, 1, 2]
  out = report.analyze(recs, n_boot=300, n_fit_boot=0)
  (best,) = out["best_shares"]
  assert best["kind"] == "mine" and best["verdict"] == "best at 0"


def test_run_json_folders_are_found(tmp_path):
  rec = json.loads(open(FIXTURE).readline())
  os.makedirs(tmp_path / "runs" / "a")
  (tmp_path / "runs" / "a" / "run.json").write_text(json.dumps(rec))
  got = records.load(str(tmp_path / "runs"))
  assert len(got) == 1 and got[0]["kind"] == "natural" and got[0]["share"] == 0


def test_records_name_params_and_tokens_and_earlier_ones_read_the_same():
  old = json.loads(open(FIXTURE).readline())  # the fixture keeps the earlier names, N and D
  new = {{"N": "params", "D": "tokens"}.get(k, k): v for k, v in old.items()}
  assert "N" not in new and "D" not in new
  assert records.normalise(new, "run.json") == records.normalise(old, "run.json")
  assert records.normalise(new, "run.json")["N"] == old["N"]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r.pop("N"), "missing field 'params' (or 'N')"),
        (lambda r: r.update(D=-5), "params and tokens must be positive"),
        (lambda r: r.update(loss=float("nan")), "field 'loss' is NaN"),
        (lambda r: r.update(shares={"natural": 1.5}), "outside [0, 1]"),
    ],
)
def test_malformed_record_is_one_clear_error(tmp_path, edit, message):
  rec = json.loads(open(FIXTURE).readline())
  edit(rec)
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps(rec) + "\n")
  with pytest.raises(UserError, match=re.escape(message)) as e:
    records.load(str(path))
  assert str(path) in str(e.value)


def test_the_report_is_the_same_in_every_process(tmp_path):
  """Intervals come from seeded draws: no set order or hash seed may change them."""
  import subprocess
  import sys

  rows = [json.loads(l) for l in open(FIXTURE)]
  path = tmp_path / "small.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["N"] in (2e6, 4e6)))
  outs = []
  for hash_seed in ("1", "2"):
    out = tmp_path / f"out{hash_seed}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "synthjax.analyze",
            "report",
            "--runs",
            str(path),
            "--out",
            str(out),
            "--n_boot",
            "200",
            "--n_fit_boot",
            "5",
        ],
        check=True,
        env=dict(os.environ, PYTHONHASHSEED=hash_seed),
        capture_output=True,
    )
    outs.append((out / "report.md").read_text().replace(str(out), "OUT"))
  assert outs[0] == outs[1]


def test_floors_the_losses_do_not_show_are_not_compared(tmp_path):
  """Losses of a pure power law (true floor E = 0) put every fitted E at its bound: no floor
  is then called lower than natural data's (the micro study's report once did, with a
  zero-width interval of 3e-13 nats)."""
  path = tmp_path / "runs.csv"
  lines = ["N,D,mixture,kind,share,seed,loss"]
  for N in (1e6, 2e6, 4e6):
    for D in (1e7, 2e7, 4e7, 8e7):
      for share in (0, 0.5):
        for seed, noise in ((0, 0.004), (1, -0.004), (2, 0.0)):
          loss = 20 / N**0.2 + 30 / (D * (1 + share)) ** 0.15 + noise
          name = "natural" if share == 0 else "natural+mine@0.5"
          lines.append(
              f"{N},{D},{name},{'natural' if share == 0 else 'mine'},{share},{seed},{loss}"
          )
  path.write_text("\n".join(lines) + "\n")
  out = report.analyze(records.load(str(path)), n_boot=200, n_fit_boot=20)
  fits = {f["mixture"]: f for f in out["joint_fits"]}
  assert "E" not in fits["natural"]["intervals"]  # not identified
  assert fits["natural+mine@0.5"]["E_minus_natural"]["diff"] is None
  md = open(report.write(out, str(tmp_path / "out"))).read()
  assert "Natural data's floor E is not identified" in md
  assert "Resolved below natural data's floor" not in md
  floors = md.split("### The lowest fitted floor")[1].split("###")[0]
  rows = [l for l in floors.splitlines() if l.startswith("| natural")]
  assert len(rows) == 2 and all(l.split(" | ")[1:5] == ["-"] * 4 for l in rows), rows
