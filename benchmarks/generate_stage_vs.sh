#!/usr/bin/env bash
# The micro study's generate stage at another commit and at this checkout, one after the other
# on this machine (runs on one machine vary too much between sessions to compare): the same
# documents, each side in its own empty HOME (so each converts the generator and starts with an
# empty compilation cache, as on a fresh machine). Prints each side's stage time and, per
# synthetic kind, the chunks, prompt and new tokens and kept outputs its records show, and for
# how many chunks both sides generated the same text (before the filters, which may differ).
#   benchmarks/generate_stage_vs.sh REV [OUT_DIR]    # e.g. REV=1d6659f, issue 14's baseline
#   GIN_FILE=study/smoke.gin benchmarks/generate_stage_vs.sh REV   # another preset
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benchmarks/generate_stage_vs.sh REV [OUT_DIR]}
out=${2:-/tmp/generate_stage_vs}
gin_file=${GIN_FILE:-study/micro.gin}
rm -rf "$out" && mkdir -p "$out"
git worktree add --detach "$out/tree-$rev" "$rev" >/dev/null
trap 'git worktree remove --force "$out/tree-$rev"' EXIT

for side in "$rev" here; do
  tree=$([ "$side" = here ] && pwd || echo "$out/tree-$rev")
  mkdir -p "$out/home-$side"
  (cd "$tree" && HOME="$out/home-$side" PYTHONPATH="$tree" python -m synthjax.study \
    --gin_file="$gin_file" --gin.STUDY_DIR="$out/study-$side" \
    "--gin.StudyConfig.stages=['corpus','generate']") 2>&1 | tee "$out/$side.log" | grep "stage"
done

python - "$out" "$rev" <<'EOF'
import glob, os, re, sys
from synthjax import jsonl
out, rev = sys.argv[1:]
read = lambda pattern: [r for f in glob.glob(pattern) for _, r in jsonl.records(f)]
outputs = {}  # side -> {(kind, chunk id): the generator's text before any filter trimmed it}
for side in (rev, "here"):
  log = open(os.path.join(out, f"{side}.log")).read()
  seconds = re.search(r"stage generate done in ([\d.]+)s", log).group(1)
  print(f"{side}: generate stage {seconds} s")
  outputs[side] = {}
  for folder in sorted(glob.glob(os.path.join(out, f"study-{side}", "synthetic", "*"))):
    kind = os.path.basename(folder).rsplit("-", 1)[0]
    kept = read(os.path.join(folder, "shard-*.jsonl"))
    every = kept + read(os.path.join(folder, "rejected", "*.jsonl"))
    outputs[side].update({(kind, r["id"]): r.get("raw", r["text"]) for r in every})
    print(f"  {kind}: {len(every)} chunks, {sum(r['prompt_tokens'] for r in every)} prompt and "
          f"{sum(r['output_tokens'] for r in every)} new tokens, {len(kept)} kept")
a, b = outputs[rev], outputs["here"]
same = sum(a[k] == b.get(k) for k in a)
print(f"the same text for {same} of {len(a)} chunks ({len(b)} here)")
EOF
