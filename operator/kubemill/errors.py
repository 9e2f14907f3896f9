"""The operator's exceptions: what went wrong, and whether trying again later can help.

The pure layers (models, engine, builders) return failures as data; the adapters in `kubemill.operator` raise
these, and the one place that talks to Kopf maps them: `Retryable` -> `kopf.TemporaryError` (with its delay),
`Permanent` -> `kopf.PermanentError`. The tree:

    KubemillError
    ├── Retryable                 trying again later may succeed (carries `delay` in seconds)
    │   ├── ApiUnavailable        the API server failed or timed out (5xx, connection errors, 429)
    │   └── NotReady              something the object depends on does not exist or is not ready yet
    └── Permanent                 the same input will fail the same way; report it and stop
        ├── ApiRejected           the API server refused the request (4xx other than 404/409/429)
        ├── InvalidSpec           the object's spec cannot be acted on (the message says what to fix)
        └── NotOurs               a create met an object of that name that is not the one it would create

`NotFound` and `Conflict` are what the client raises for 404 and 409; callers decide what they mean (a delete
that meets 404 is done; a create that meets 409 adopts the existing object, but only if it holds everything
the create would have written: otherwise `NotOurs`).
"""

from __future__ import annotations


class KubemillError(Exception):
    """Base of every kubemill operator error."""


class Retryable(KubemillError):
    """Trying again after `delay` seconds may succeed."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class ApiUnavailable(Retryable):
    """The API server failed or timed out (5xx, 429, connection errors)."""


class NotReady(Retryable):
    """Something this object depends on does not exist or is not ready yet."""


class Permanent(KubemillError):
    """The same input will fail the same way: report it and stop."""


class ApiRejected(Permanent):
    """The API server refused the request (a 4xx other than 404, 409 and 429)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class InvalidSpec(Permanent):
    """The object's spec cannot be acted on; the message says what to fix."""


class NotOurs(Permanent):
    """A create met an existing object of the same name that is not what it would have created (different
    content or owner): kubemill never adopts it, so nothing planted under a name it computes is used."""


class NotFound(KubemillError):
    """404: the object does not exist (a delete that meets it is done)."""


class Conflict(KubemillError):
    """409: the object already exists (a create adopts it) or changed under us (a write retries)."""
