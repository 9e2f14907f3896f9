"""RunnerPool: warm workers that run a namespace's ScriptRuns without a Job per run (docs/pools.md).

A pool is a Deployment of workers for one language; a Script opts in with `spec.runner.pool: <name>`, or a
pool with `default: true` serves every Script of its language in its namespace that names no pool. Job-per-run
stays the default and the fallback when no pool has capacity.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubemill.models.common import Conditions, JsonObject, KubemillModel, KubemillResource, StatusModel

PoolLanguage = Literal["python3"]
"""Languages with a warm runner (a fork server). Others are refused by the schema, naming the field."""


class RunnerPoolSpec(KubemillModel):
    """How many workers, for which language, from which images, and how long a claim lives unrenewed."""

    language: PoolLanguage
    replicas: Annotated[int, Field(ge=0, le=1000)] = 2
    default: bool = False
    image: str | None = None
    """The runner container's image (default: the language's runner image, as for Jobs)."""
    agent_image: str | None = None
    """The worker agent's image (default: the operator's image): it holds the pool's API identity."""
    resources: JsonObject | None = None
    """The runner container's resources (requests/limits), shared by the runs it forks."""
    lease_seconds: Annotated[int, Field(ge=2, le=3600)] = 10
    """A claim not renewed this long is lost: the attempt fails (`WorkerLost`), retried as the Script says."""
    claim_timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 30
    """An offered run no worker claims within this long runs as a Job instead."""
    max_queued: Annotated[int, Field(ge=0, le=100000)] = 100
    """Offered, unclaimed runs beyond this count go to Jobs (the pool has no capacity for them)."""


class RunnerPoolStatus(StatusModel):
    """What the workers are doing: ready, busy (a run claimed), queued (offered, unclaimed)."""

    observed_generation: int | None = None
    replicas: int = 0
    ready_replicas: int = 0
    busy: int = 0
    queued: int = 0
    conditions: Conditions = ()


class RunnerPool(KubemillResource):
    kind: Literal["RunnerPool"]
    spec: RunnerPoolSpec
    status: RunnerPoolStatus | None = None
