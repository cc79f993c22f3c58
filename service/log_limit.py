"""At most one log line per kind of event and interval, with how many were left out.

A server shedding load answers thousands of 503s a second; a warning for each would flood the
log (and cost the loop ~10 µs a line) exactly when an operator needs it readable. The counters
(`fpgaas_rejected_requests_total`, `fpgaas_errors_total`) count every event; the log says that
it happens, and how often.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Seen:
    logged_at: float  # clock() of the last line written for this key
    left_out: int = 0  # events of this key since then


class LimitedLog:
    """`warning(key, ...)` writes the first event of a key at once, then at most one line per
    `interval_s` (seconds of `clock`), naming how many events of that key it left out meanwhile.

    Keys must come from a small set (a status code, an error code, a loaded model's name): one
    entry is kept per key for the process's lifetime. Meant for one thread (the event loop); from
    several, a race can only write a line twice or miscount a left-out event.
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._seen: dict[Hashable, _Seen] = {}

    def warning(self, key: Hashable, message: str, *args: object) -> None:
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(now)
            self._logger.warning(message, *args)
        elif now - seen.logged_at < self._interval_s:
            seen.left_out += 1
        else:
            if seen.left_out:
                self._logger.warning(
                    message + " (and %d more like it in the last %.0f s)",
                    *args,
                    seen.left_out,
                    now - seen.logged_at,
                )
            else:
                self._logger.warning(message, *args)
            seen.logged_at, seen.left_out = now, 0
