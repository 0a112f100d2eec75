"""The engine's slot state on the host (generate/slots.py), driven by hand: which requests a
prefill batch takes, when a request ends, and what a finished one reports."""

import pytest

from synthjax.errors import UserError
from synthjax.generate.sampling import Sampling
from synthjax.generate.slots import Request, Slots

EOS = 0


def _slots(prompts, n=2, max_len=32, read_ahead=8, **kw):
  requests = [Request(p, Sampling(max_new_tokens=4), **kw) for p in prompts]
  state = Slots(n, max_len, [EOS], requests, read_ahead, decode_text=lambda ids: str(ids))
  state.read_ahead()
  return state


def test_a_prefill_batch_is_the_oldest_request_and_the_nearest_lengths():
  state = _slots([[1] * 10, [1] * 3, [1] * 11, [1] * 9, [1] * 30])
  assert state.next_batch(3) == [0, 2, 3]  # lengths 10, then 11 and 9 (1 away each)
  assert state.waiting == [1, 4]
  assert state.next_batch(3) == [1, 4]  # fewer left than asked


def test_a_request_ends_at_eos_at_its_length_and_at_a_full_cache():
  state = _slots([[5, 6], [7], [8] * 29], n=3)
  for slot, request in enumerate(state.next_batch(3)):
    state.start(slot, request, first_token=9)
  assert state.append(0, [3, EOS, 4]) == 2  # the token after EOS is not kept
  assert state.finish_reason(0) == "eos" and state.out[0] == [9, 3, EOS]
  assert state.append(1, [3, 3, 3, 3]) == 3  # 4 new tokens in all, the first from prefill
  assert state.finish_reason(1) == "length"
  assert state.append(2, [3, 3]) == 2 and state.finish_reason(2) == "context"
  # room counts max new tokens and the cache only: an ended slot is retired before a pass
  assert state.room().tolist() == [1, 0, 0]


def test_an_ended_request_is_reported_once_and_frees_its_slot():
  got = []
  requests = [Request([1, 2], Sampling(max_new_tokens=2)), Request([3], Sampling())]
  state = Slots(2, 32, [EOS], requests, 8, on_result=lambda i, r: got.append((i, r)))
  state.read_ahead()
  state.start(0, state.next_batch(1)[0], first_token=5)
  state.retire(0)  # one token of two: still running
  assert got == [] and state.free() == [1]
  state.append(0, [6])
  state.retire(0)
  assert [(i, r.tokens, r.finish) for i, r in got] == [(0, [5, 6], "length")]
  assert state.free() == [0, 1] and 0 not in state.live


def test_stop_strings_end_a_request_where_its_text_holds_one():
  state = _slots([[1]], stop=("[9, 4",))
  state.start(0, state.next_batch(1)[0], first_token=9)
  assert state.append(0, [4, 4]) == 1 and state.finish_reason(0) == "stop"


@pytest.mark.parametrize(
    "prompt,message", [([], "request 0: empty prompt"), ([1] * 32, "longer than the context")]
)
def test_a_bad_request_is_refused_when_read(prompt, message):
  with pytest.raises(UserError, match=message):
    _slots([prompt])
