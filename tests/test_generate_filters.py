"""Generation filters: each reason on made-up text, and on a real generated sample labelled by
hand, what the kept outputs still hold."""

import collections
import json
import os

import pytest

from synthjax.generate import filters, prompts

SAMPLE = os.path.join(os.path.dirname(__file__), "fixtures", "generated_sample.jsonl")


def test_filters_name_the_reason():
  src = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris."
  good = (
      "In Paris, on the Champ de Mars, stands a lattice tower of wrought iron named after "
      "Eiffel."
  )
  reason = lambda text, finish="eos", floor=0.0: filters.review(text, src, finish, floor)[1]
  assert reason("") == "empty"
  assert reason("A fine rewrite of the text here.", "length") == "truncated"
  assert reason("la la la " * 20) == "repetitive"
  assert reason(src) == "echo"
  assert reason("Here's a suggested edit: the tower stands in Paris.") == "preamble"
  assert reason(good) is None
  # commentary about the rewriting, wherever it is
  assert reason("The above paragraph was rephrased for clarity and grammar.") == "commentary"
  assert reason("The tower, I have rewritten it, stands on the Champ de Mars in Paris.") == (
      "commentary"
  )
  # ... but a rewrite wrapped in it is kept without the wrapping, and says so
  text, why = filters.review(
      f"Here is the revised paragraph:\n\n{good}\n\nI made changes to "
      "improve clarity while maintaining the original meaning.",
      src,
      "eos",
  )
  assert why is None and text == good
  # ... about the output itself, while an answer that says "the answer is" is an answer
  assert filters.commentary("Paris. This answer covers the tower's city.", src) == (
      "This answer covers"
  )
  assert filters.commentary("This document aims to describe the tower.", src) == (
      "This document aims"
  )
  assert filters.commentary("The answer is Paris.", src) is None
  # a word the source itself uses is not commentary
  assert (
      filters.commentary("Paraphrase is a restatement.", "A paraphrase is a restatement.") is None
  )
  # faithfulness: the share of the output's content words found in the source
  # 8 of its 11 content words are the source's (not 'stands', 'named', 'after')
  assert filters.faithfulness(good, src) == pytest.approx(8 / 11)
  assert filters.faithfulness("Bananas ripen quickly in warm kitchens.", src) == 0.0
  assert reason("Bananas ripen quickly in warm kitchens.", floor=0.2) == "unfaithful"


def test_kept_outputs_of_a_labelled_sample_are_rarely_commentary():
  """Real outputs, every one read and its commentary (about the text, the rewriting or the
  question, or the answer itself) quoted by hand: SmolLM2-135M-Instruct's HQ rephrases of
  Wikipedia leads and QA of others. Rounds 1 and 2 (120 HQ and 80 QA each) were generated in
  f32. Round 1 was labelled before the filters saw it, which found gaps
  (3 of 82 kept HQ outputs were commentary) that were then closed; round 2 was generated and
  labelled after that, from other documents, as the held-out measure: 1 of 85 kept HQ and 1
  of 28 kept QA outputs were commentary. The QA gap ("this question") was then closed too.
  Round 3 (80 HQ, 60 QA, other documents again) came from the generator as the micro study now
  runs it, bf16 weights over an f32 cache; held out, 0 of 48 kept HQ and 1 of 23 kept QA
  outputs were commentary ("This answer covers ..."), a gap then closed, so all three rounds
  are now in-sample: the next labelled round is the held-out measure. An output counts as
  commentary if a quoted phrase is left in the text the filters keep."""
  with open(SAMPLE) as f:
    sample = [json.loads(line) for line in f]
  for rnd, style in sorted({(r["round"], r["style"]) for r in sample}):
    t = prompts.load_template(style)
    rows = [r for r in sample if r["style"] == style and r["round"] == rnd]
    kept = leaks = 0
    reasons = collections.Counter()
    for r in rows:
      text, why = filters.review(
          r["output"], r["source"], r["finish"], t["min_faithfulness"], t.get("must_match")
      )
      reasons[why] += 1
      if why is None:
        kept += 1
        leaks += any(q in text for q in r["commentary"])
    labelled = sum(bool(r["commentary"]) for r in rows)
    print(
        f"round {rnd} {style}: {len(rows)} outputs, {labelled} with commentary; kept {kept} "
        f"({kept / len(rows):.0%}), of which {leaks} still commentary; {dict(reasons)}"
    )
    assert labelled >= 5  # the sample holds the problem it tests
    # a filter that dropped everything would pass the check below: it must keep a fair share
    assert kept >= 0.15 * len(rows), f"round {rnd} {style}: the filters keep too little"
    assert leaks <= 0.02 * kept, f"round {rnd} {style}: {leaks} of {kept} kept are commentary"
