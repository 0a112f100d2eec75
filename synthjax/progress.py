"""The progress of a long loop (training steps, a study's runs): the rate of the work done in
this process and the time the rest will take at that rate. Work found done already (a resumed
run's steps, a study's finished runs) counts neither in the rate nor in what is left."""

import time
from typing import Callable


class Rate:

  def __init__(self, total: float, done: float = 0.0, clock: Callable[[], float] = time.time):
    self.total, self.done = total, done
    self._clock = clock
    self._t0, self._done0 = clock(), done

  def add(self, amount: float) -> None:
    self.done += amount

  def skip(self, amount: float) -> None:
    """Work found done already: it is neither this process's rate nor left to do."""
    self.total -= amount

  def per_second(self) -> float:
    return (self.done - self._done0) / max(self._clock() - self._t0, 1e-9)

  def seconds_left(self) -> float:
    """inf until some work is done; 0 when nothing is left."""
    left, rate = self.total - self.done, self.per_second()
    if left <= 0:
      return 0.0
    return left / rate if rate > 0 else float("inf")

  def eta(self) -> str:
    s = self.seconds_left()
    if s == float("inf"):
      return "-"
    if s >= 3600:
      return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 60)}m{int(s % 60):02d}s"
