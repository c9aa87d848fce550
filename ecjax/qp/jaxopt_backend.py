"""jaxopt's BoxOSQP behind the same API, for comparison only (STYLE habit 14).

jaxopt solves the same canonical form with the same sign convention for y.
It factorizes nothing ahead: every iteration solves its linear system by
Jacobi-preconditioned conjugate gradients (BoxOSQP's `cg+jacobi`, several times
faster per iteration than its dense `lu` on the agent QPs), so it shares no work
across a batch; use it to cross-check, not as the fast path. Tolerances, ρ, σ,
α, the iteration cap and the check period come from the operator's ADMM settings
as given to `prepare`.
"""

import jax.numpy as jnp
from jaxopt import BoxOSQP

from . import kkt
from .status import Status

_STATUS = {  # jaxopt code -> ecjax Status
    BoxOSQP.UNSOLVED: Status.max_iter,
    BoxOSQP.SOLVED: Status.solved,
    BoxOSQP.PRIMAL_INFEASIBLE: Status.primal_infeasible,
    BoxOSQP.DUAL_INFEASIBLE: Status.dual_infeasible,
}


def solve_jaxopt(op, q, lo, hi, warm=None):
    from .admm import Solution, _finite  # local: admm imports nothing from here

    s, f = op.host, op.settings  # static settings; the float ones (traced)
    dt = op.dtype
    q, lo, hi = (jnp.asarray(v, dt) for v in (q, lo, hi))
    solver = BoxOSQP(
        tol=f.eps_abs,
        maxiter=s.max_iter,
        rho_start=s.rho,
        sigma=s.sigma,
        momentum=f.alpha,
        primal_infeasible_tol=f.eps_pinf,
        dual_infeasible_tol=f.eps_dinf,
        termination_check_frequency=s.check_every,
        eq_qp_solve="cg+jacobi",
        implicit_diff=False,
        jit=True,
    )
    P, A = op.P_orig, op.A_orig
    init = None
    if warm is not None:
        from jaxopt.base import KKTSolution

        yw = jnp.asarray(warm.y, dt)
        init = KKTSolution((jnp.asarray(warm.x, dt), jnp.asarray(warm.z, dt)), yw, (yw, yw))
    sol, state = solver.run(init, params_obj=(P, q), params_eq=A, params_ineq=(lo, hi))
    x, z = sol.primal
    y = sol.dual_eq
    codes = jnp.asarray([int(_STATUS[k]) for k in sorted(_STATUS)], jnp.int32)
    status = codes[jnp.asarray(state.status, jnp.int32)]
    obj = 0.5 * jnp.dot(x, P @ x) + jnp.dot(q, x)
    return Solution(
        x=_finite(x), y=_finite(y), z=_finite(z), rho=jnp.asarray(state.rho_bar, dt), status=status,
        num_steps=jnp.asarray(state.iter_num, jnp.int32),
        prim_res=kkt.primal_residual(A, lo, hi, x), dual_res=kkt.dual_residual(P, q, A, x, y),
        obj=_finite(obj),
    )  # fmt: skip
