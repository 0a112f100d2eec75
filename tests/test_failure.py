"""The hook that keeps a failed save's report to one line drops only what it means to."""

import sys

from synthjax.training import failure


class _RaisesWhenCollected:

  def __init__(self, error):
    self.error = error

  def __del__(self):
    raise self.error


def test_only_the_cancelled_writes_of_a_failed_save_are_dropped(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
  failure.report_failed_saves_once()
  failure.report_failed_saves_once()  # a second call wraps nothing twice
  _RaisesWhenCollected(RuntimeError("Event loop is closed"))
  _RaisesWhenCollected(RuntimeError("another loop error"))
  _RaisesWhenCollected(ValueError("Event loop is closed"))
  assert [(type(e), str(e)) for e in seen] == [
      (RuntimeError, "another loop error"),
      (ValueError, "Event loop is closed"),
  ]
