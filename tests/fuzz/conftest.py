"""Fuzzing harnesses (hypothesis): bounded in `make test`, long with KUBEMILL_FUZZ_EXAMPLES (see `make fuzz`).

A crash is any exception other than the clean error the parser under test documents (SignatureError,
CronError, ValueError/ValidationError naming the field, Refused).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "kubemill",
    max_examples=int(os.environ.get("KUBEMILL_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None if os.environ.get("KUBEMILL_FUZZ_EXAMPLES") is None else settings.default.database,
    print_blob=True,
)
settings.load_profile("kubemill")
