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
  good = "In Paris, on the Champ de Mars, stands a lattice tower of wrought iron named after Eiffel."
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
      "commentary")
  # ... but a rewrite wrapped in it is kept without the wrapping, and says so
  text, why = filters.review(f"Here is the revised paragraph:\n\n{good}\n\nI made changes to "
                             "improve clarity while maintaining the original meaning.", src, "eos")
  assert why is None and text == good
  # a word the source itself uses is not commentary
  assert filters.commentary("Paraphrase is a restatement.", "A paraphrase is a restatement.") is None
  # faithfulness: the share of the output's content words found in the source
  # 8 of its 11 content words are the source's (not 'stands', 'named', 'after')
  assert filters.faithfulness(good, src) == pytest.approx(8 / 11)
  assert filters.faithfulness("Bananas ripen quickly in warm kitchens.", src) == 0.0
  assert reason("Bananas ripen quickly in warm kitchens.", floor=0.2) == "unfaithful"


def test_kept_outputs_of_a_labelled_sample_are_rarely_commentary():
  """A held-out sample: SmolLM2-135M-Instruct's HQ rephrases of 120 Wikipedia leads and QA of
  80 others (documents the filters were not written from), every output read and its
  commentary about the text or the rewriting quoted by hand (`commentary`). The filters keep
  an output only when no quoted phrase is left in the kept text, in all but 2% of kept ones."""
  with open(SAMPLE) as f:
    sample = [json.loads(line) for line in f]
  report = {}
  for style in ("hq", "qa"):
    t = prompts.load_template(style)
    rows = [r for r in sample if r["style"] == style]
    kept = leaks = 0
    reasons = collections.Counter()
    for r in rows:
      text, why = filters.review(r["output"], r["source"], r["finish"], t["min_faithfulness"],
                                 t.get("must_match"))
      reasons[why] += 1
      if why is None:
        kept += 1
        leaks += any(q in text for q in r["commentary"])
    labelled = sum(bool(r["commentary"]) for r in rows)
    report[style] = (len(rows), labelled, kept, leaks)
    print(f"{style}: {len(rows)} outputs, {labelled} with commentary (hand labels); kept "
          f"{kept} ({kept / len(rows):.0%}), of which {leaks} still commentary; {dict(reasons)}")
    assert labelled >= 5  # the sample holds the problem it tests
    # a filter that dropped everything would pass the check below: it must keep a fair share
    assert kept >= 0.15 * len(rows), f"{style}: the filters keep too little"
    assert leaks <= 0.02 * kept, f"{style}: {leaks} of {kept} kept outputs are commentary"
