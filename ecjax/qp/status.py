"""Per-sample solver status, carried as integer data (STYLE habit 5).

Under `vmap` a failure is a value, not an exception: every sample of a batch
gets its own `Status` code, so one infeasible sample never stops the others.
"""

import enum


class Status(enum.IntEnum):
    """Outcome of one QP solve. Stored as `int32` in `Solution.status`."""

    running = -1  # internal only: never returned by `solve`
    solved = 0
    max_iter = 1
    primal_infeasible = 2
    dual_infeasible = 3
    numerical_error = 4

    @property
    def message(self) -> str:
        return MESSAGES[self]


MESSAGES = {
    Status.running: "The solver is still iterating.",
    Status.solved: "Solved: primal and dual residuals are below eps_abs + eps_rel * scale.",
    Status.max_iter: "The iteration cap `max_iter` was reached before convergence.",
    Status.primal_infeasible: (
        "Primal infeasible: the dual iterate difference dy is a certificate "
        "(||A'dy|| ~ 0 and hi'max(dy,0) + lo'min(dy,0) < 0)."
    ),
    Status.dual_infeasible: (
        "Dual infeasible (unbounded below): the primal iterate difference dx is a "
        "certificate (P dx ~ 0, q'dx < 0, A dx in the recession cone of [lo, hi])."
    ),
    Status.numerical_error: "A non-finite number appeared; the last finite iterate is returned.",
}


def message(code) -> str:
    """Message for an integer status code (Python int or 0-d array)."""
    return MESSAGES[Status(int(code))]

