#!/usr/bin/env bash
# The micro study's generate stage at another commit and at this checkout, one after the other
# on this machine (runs on one machine vary too much between sessions to compare): the same
# documents, each side in its own empty HOME (so each converts the generator and starts with an
# empty compilation cache, as on a fresh machine). Prints each side's stage time and, per
# synthetic kind, the chunks, prompt and new tokens and kept outputs its records show.
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
import glob, json, os, re, sys
out, rev = sys.argv[1:]
for side in (rev, "here"):
  log = open(os.path.join(out, f"{side}.log")).read()
  seconds = re.search(r"stage generate done in ([\d.]+)s", log).group(1)
  print(f"{side}: generate stage {seconds} s")
  for kind in sorted(glob.glob(os.path.join(out, f"study-{side}", "synthetic", "*"))):
    kept = [json.loads(l) for f in glob.glob(os.path.join(kind, "shard-*.jsonl")) for l in open(f)]
    rejected = [json.loads(l) for f in glob.glob(os.path.join(kind, "rejected", "*.jsonl"))
                for l in open(f)]
    every = kept + rejected
    print(f"  {os.path.basename(kind)}: {len(every)} chunks, "
          f"{sum(r['prompt_tokens'] for r in every)} prompt and "
          f"{sum(r['output_tokens'] for r in every)} new tokens, {len(kept)} kept")
EOF
