"""When to resend and how long to wait: one policy for the sync and async clients."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fpgaas.client._errors import FpgaasClientError, ServerOverloaded, ServerUnavailable, TransportError


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped.

    retries: resends after the first attempt (0 = never resend).
    backoff_s: the first backoff, seconds; attempt k waits in [b/2, b] with b = backoff_s * 2**k.
    max_backoff_s: no wait is longer, a server's `Retry-After` included.

    Resent: 503 answers (not ready, device error, overloaded) and transport errors marked
    `retryable`. Never resent: 4xx (the same request would fail again), other 5xx, read timeouts.
    Immutable and thread-safe.
    """

    retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(
                f"backoff_s and max_backoff_s must be >= 0, got {self.backoff_s}, {self.max_backoff_s}"
            )

    def should_retry(self, error: FpgaasClientError) -> bool:
        """Whether `error` may go away if the same request is sent again."""
        if isinstance(error, ServerUnavailable):
            return True
        return isinstance(error, TransportError) and error.retryable

    def delay(self, attempt: int, error: FpgaasClientError) -> float | None:
        """Seconds to wait before resending after failed attempt number `attempt` (0-based),
        or None when the error must be raised instead."""
        if attempt >= self.retries or not self.should_retry(error):
            return None
        backoff = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        # Equal jitter: half fixed, half random, so clients that failed together spread out.
        jittered = backoff / 2 + random.uniform(0.0, backoff / 2)
        if isinstance(error, ServerOverloaded) and error.retry_after is not None:
            # The server knows its queue best: wait at least what it asked (within the cap).
            return min(self.max_backoff_s, error.retry_after + jittered)
        return jittered
