"""When a failed delivery is tried again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds after each failed try before the next one: ten tries over about 24 hours, most of them early, when
#: a receiver is most likely back (a deploy, a restart), the last ones hours apart.
DEFAULT_DELAYS_S: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 21600, 50400)
#: Each delay is stretched or shrunk by up to this fraction, so the deliveries a receiver's outage held back
#: do not all come back at the same instant.
DEFAULT_JITTER = 0.2


@dataclass(frozen=True)
class RetrySchedule:
    delays_s: tuple[float, ...] = DEFAULT_DELAYS_S
    jitter: float = DEFAULT_JITTER

    def next_delay_s(self, tries_done: int, rand: Callable[[], float] = random.random) -> float | None:
        """Seconds until the next try after ``tries_done`` failed ones; None when the schedule is spent."""
        if tries_done < 1 or tries_done > len(self.delays_s):
            return None
        base = self.delays_s[tries_done - 1]
        return max(0.0, base * (1 + self.jitter * (2 * rand() - 1)))
