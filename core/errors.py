"""Domain errors. Each maps to one HTTP status in `handlers/_http.py`, nowhere else."""

from __future__ import annotations


class TaskgateError(Exception):
    """Base of every error taskgate reports to a caller; `details` is safe to show."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


class ValidationError(TaskgateError):
    """The request is malformed; `details` names the field."""


class UnauthorizedError(TaskgateError):
    """No credentials, or credentials that do not verify."""


class ForbiddenError(TaskgateError):
    """The principal is known but may not do this."""


class NotFoundError(TaskgateError):
    """No such task or server (or one the principal may not see)."""


class ConflictError(TaskgateError):
    """The request contradicts the current state: a duplicate id, a forbidden transition."""


class PayloadTooLargeError(TaskgateError):
    """The request body is over the size limit."""


class RateLimitedError(TaskgateError):
    def __init__(self, details: str, retry_after_s: int) -> None:
        super().__init__(details)
        self.retry_after_s = retry_after_s


class UnavailableError(TaskgateError):
    """The store is throttling or briefly failing; the same request may succeed if retried."""

    def __init__(self, details: str, retry_after_s: int = 1) -> None:
        super().__init__(details)
        self.retry_after_s = retry_after_s


class OwnerLimitError(Exception):
    """A claim would put the task's owner over MAX_IN_FLIGHT_PER_OWNER (nothing was written)."""

    def __init__(self, owner: str) -> None:
        super().__init__(f"owner {owner} is at its limit of tasks in flight")
        self.owner = owner


class StaleWriteError(Exception):
    """A conditional write lost: the item is not in the state the writer expected.

    Internal to core: services turn it into a ConflictError with a reason, or retry.
    `current` is the item as it is now when the store can tell (None if it is gone).
    """

    def __init__(self, current: object | None = None) -> None:
        super().__init__("conditional write failed")
        self.current = current


class NoCapacityError(Exception):
    """The server chosen for a task has no free slot, or is no longer online."""
