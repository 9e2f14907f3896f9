"""Windmill's retry policy as a pure function: which retry comes next and after how long.

Constant retries come first (`constant.attempts`, `constant.seconds` apart), then exponential ones, the n-th
(0-based) waiting `multiplier * seconds^(n+1)` seconds, +/- `random_factor` percent. The jitter is not random:
it is derived from a hash of (run, step, attempt), so `advance()` stays a pure function and a replayed history
waits exactly as long as the original did.
"""

from __future__ import annotations

from kubemill.engine.naming import identity_digest
from kubemill.models.openflow_parts import Retry


def retry_delay(policy: Retry | None, failed_attempt: int, run_name: str, step_path: str) -> float | None:
    """Seconds to wait before retrying after `failed_attempt` (0 = the first try) failed; None = no retry."""
    if policy is None:
        return None
    retry = failed_attempt  # the index of the retry about to happen
    constant = policy.constant
    if constant is not None and retry < constant.attempts:
        return float(constant.seconds)
    exponential = policy.exponential
    if exponential is None:
        return None
    n = retry - (constant.attempts if constant else 0)
    if n >= exponential.attempts:
        return None
    delay = float(exponential.multiplier * exponential.seconds ** (n + 1))
    factor = exponential.random_factor or 0
    if factor:
        unit = int(identity_digest("jitter", run_name, step_path, str(failed_attempt))[:8], 16) / 0xFFFFFFFF
        delay *= 1 + (factor / 100) * (2 * unit - 1)
    return max(delay, 0.0)
