"""The progress helper's rate and time left, on a clock the test moves: the boring cases too
(nothing done yet, everything done, a resumed loop, work found done already)."""

from synthjax.progress import Rate


class Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_the_rate_is_this_process_work_and_the_eta_what_is_left_at_it():
  clock = Clock()
  r = Rate(total=1000, clock=clock)
  assert r.eta() == "-"  # nothing done yet: no rate to go by
  clock.now += 10
  r.add(100)
  assert r.per_second() == 10.0 and r.seconds_left() == 90.0 and r.eta() == "1m30s"
  r.add(900)
  assert r.seconds_left() == 0.0 and r.eta() == "0m00s"


def test_a_resumed_loop_counts_only_the_steps_it_ran():
  clock = Clock()
  r = Rate(total=10_000, done=9_000, clock=clock)  # 9,000 steps from a checkpoint
  clock.now += 50
  r.done = 9_100
  assert r.per_second() == 2.0 and r.seconds_left() == 450.0 and r.eta() == "7m30s"


def test_work_found_done_already_is_neither_rate_nor_left():
  clock = Clock()
  r = Rate(total=3_000, clock=clock)
  r.skip(2_000)  # two finished runs of 1,000 tokens
  clock.now += 2 * 3600
  r.add(500)
  assert r.per_second() == 500 / 7200 and r.seconds_left() == 7200.0 and r.eta() == "2h00m"
