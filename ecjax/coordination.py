"""Optimal convex weights of an FC-MPC iteration (docs/fcmpc.md; MODEL §6, beyond the paper).

At iteration p every prosumer i proposes x_i* against iterate p−1. With d_i = x_i* − x_i^{p−1}
on prosumer i's block and zero elsewhere, any λ on the simplex

    Λ = {λ ∈ R^|P| : λ >= 0, Σ_i λ_i <= 1}

gives a feasible iterate x^p = x^{p−1} + Σ_i λ_i d_i (a convex combination of the jointly
feasible points (x_i*, x_{−i}^{p−1}) and x^{p−1}). Φ is quadratic, so

    Φ(x^{p−1} + Σ_i λ_i d_i) = Φ(x^{p−1}) + bᵀλ + ½ λᵀMλ,   b = Dᵀ∇Φ(x^{p−1}),  M = DᵀHD,

exactly. b and M are the gradient and Hessian in λ of that function at λ = 0, computed by
JAX from `ecjax.evaluate.cost` itself (forward-over-reverse: one Hessian-vector product per
prosumer direction), so no cost is written twice. The λ-QP min {bᵀλ + ½ λᵀMλ : λ ∈ Λ} has |P|
variables and |P| + 1 rows; `simplex_qp` solves it with a dense primal-dual interior-point
method (Mehrotra predictor-corrector, one Cholesky of an |P|×|P| matrix per iteration).

`optimal_weights` projects the solution onto Λ and keeps it only where the λ-QP ended
`solved` and its objective is not above the uniform weight's; otherwise it returns the
uniform weight. A λ-QP not solved, or solved but worse than the uniform weight by more than its
tolerance, is a fallback (counted by `ecjax.fcmpc`). Written for one instance.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._iterate import bounded_while
from .qp import Status


class SimplexQPSolution(eqx.Module):
    lam: Float[Array, " P"]  # the minimizer, projected onto Λ
    status: Int[Array, ""]  # `ecjax.qp.Status`: solved, max_iter or numerical_error
    num_steps: Int[Array, ""]


class _IPMState(eqx.Module):
    lam: Float[Array, " P"]
    s: Float[Array, " m"]  # slacks of the rows Gλ <= h
    z: Float[Array, " m"]  # their multipliers
    k: Int[Array, ""]
    done: Array


def project(lam: Float[Array, " P"]) -> Float[Array, " P"]:
    """A point of Λ near `lam`: negative entries to 0, then scaled to Σ λ <= 1. (Not the
    Euclidean projection; on a point of Λ up to rounding it moves by that rounding only.)"""
    lam = jnp.maximum(lam, 0.0)
    total = jnp.sum(lam)
    return jnp.where(total > 1.0, lam / jnp.where(total > 0, total, 1.0), lam)


TOL = 1e-10  # stopping tolerance of `simplex_qp` on the scaled problem


def simplex_qp(M: Float[Array, "P P"], b: Float[Array, " P"], tol: float = TOL, max_iter: int = 50):
    """min ½ λᵀMλ + bᵀλ  s.t.  λ >= 0, Σ λ <= 1, with M symmetric positive semidefinite.

    The rows are Gλ + s = h, s >= 0 with G = [−I; 1ᵀ], h = [0; 1]. Each Newton step solves
    (M + Gᵀ diag(z/s) G) Δλ = r, where Gᵀ diag(z/s) G = diag(z_{1..P}/s_{1..P}) +
    (z_{P+1}/s_{P+1}) 11ᵀ; the problem is scaled to max(|M|, |b|) = 1 first (same minimizer).
    Stops when the dual residual, the primal residual and the mean complementarity are all
    below `tol` (scaled problem).

    **Returns:** a `SimplexQPSolution`, λ projected onto Λ.
    """
    P = b.shape[0]
    dt = b.dtype
    scale = jnp.maximum(jnp.maximum(jnp.max(jnp.abs(M)), jnp.max(jnp.abs(b))), jnp.finfo(dt).tiny)
    M = 0.5 * (M + M.T) / scale
    b = b / scale
    m = P + 1
    h = jnp.zeros((m,), dt).at[P].set(1.0)
    G = lambda v: jnp.concatenate([-v, jnp.sum(v, keepdims=True)])  # noqa: E731
    Gt = lambda y: -y[:P] + y[P]  # noqa: E731
    reg = jnp.finfo(dt).eps ** 0.5 * 1e-2  # keeps the Cholesky defined where M is singular

    def residuals(st):
        rd = M @ st.lam + b + Gt(st.z)
        rp = G(st.lam) + st.s - h
        return rd, rp

    def converged(st):
        rd, rp = residuals(st)
        mu = jnp.dot(st.s, st.z) / m
        return (jnp.max(jnp.abs(rd)) <= tol) & (jnp.max(jnp.abs(rp)) <= tol) & (mu <= tol)

    def direction(st, L, rd, rp, rc):
        """Δ for the right-hand sides −rd, −rp, −rc (rc: the complementarity row)."""
        rhs = -rd - Gt((-rc + st.z * rp) / st.s)
        dlam = jax.scipy.linalg.cho_solve((L, True), rhs)
        ds = -rp - G(dlam)
        dz = (-rc - st.z * ds) / st.s
        return dlam, ds, dz

    def max_step(v, dv):
        ratio = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
        return jnp.minimum(1.0, jnp.min(ratio))

    def body(st):
        rd, rp = residuals(st)
        w = st.z / st.s
        K = M + jnp.diag(w[:P] + reg) + w[P] * jnp.ones((P, P), dt)
        L = jnp.linalg.cholesky(K)
        # predictor (affine scaling)
        rc = st.s * st.z
        dl_a, ds_a, dz_a = direction(st, L, rd, rp, rc)
        a_aff = jnp.minimum(max_step(st.s, ds_a), max_step(st.z, dz_a))
        mu = jnp.dot(st.s, st.z) / m
        mu_aff = jnp.dot(st.s + a_aff * ds_a, st.z + a_aff * dz_a) / m
        sigma = (mu_aff / mu) ** 3
        # corrector
        rc = st.s * st.z + ds_a * dz_a - sigma * mu
        dl, ds, dz = direction(st, L, rd, rp, rc)
        a = 0.99 * jnp.minimum(max_step(st.s, ds), max_step(st.z, dz))
        new = _IPMState(lam=st.lam + a * dl, s=st.s + a * ds, z=st.z + a * dz, k=st.k + 1, done=st.done)
        finite = jnp.all(jnp.isfinite(new.lam)) & jnp.all(jnp.isfinite(new.s)) & jnp.all(jnp.isfinite(new.z))
        new = jax.tree_util.tree_map(lambda x, y: jnp.where(finite, x, y), new, st)
        return eqx.tree_at(lambda t: t.done, new, converged(new) | ~finite)

    lam0 = jnp.full((P,), 1.0 / (P + 1), dt)  # interior: every row has slack 1/(P + 1)
    st0 = _IPMState(lam=lam0, s=h - G(lam0), z=jnp.ones((m,), dt), k=jnp.asarray(0, jnp.int32),
                    done=jnp.asarray(False))  # fmt: skip
    st = bounded_while(lambda st: ~st.done, body, st0, max_iter)
    ok = converged(st)
    finite = jnp.all(jnp.isfinite(st.lam)) & jnp.all(jnp.isfinite(M)) & jnp.all(jnp.isfinite(b))
    status = jnp.where(ok & finite, int(Status.solved),
                       jnp.where(finite, int(Status.max_iter), int(Status.numerical_error)))  # fmt: skip
    return SimplexQPSolution(lam=project(st.lam), status=status.astype(jnp.int32), num_steps=st.k)


def weight_qp(phi, x_prev: Float[Array, "P nx"], x_star: Float[Array, "P nx"]):
    """(Φ(x^{p−1}), b, M) of λ ↦ Φ(x^{p−1} + Σ_i λ_i d_i), from `phi` (iterate [P, nx] ->
    scalar) by automatic differentiation: b its gradient, M its Hessian at λ = 0 (a vmapped
    Hessian-vector product per direction: `jax.jacfwd` of `jax.grad`)."""
    d = x_star - x_prev

    def g(lam):
        return phi(x_prev + lam[:, None] * d)

    zero = jnp.zeros((x_prev.shape[0],), x_prev.dtype)
    return g(zero), jax.grad(g)(zero), jax.jacfwd(jax.grad(g))(zero)


class Weights(eqx.Module):
    lam: Float[Array, " P"]  # the weights applied
    fallback: Array  # the uniform weight was taken (λ-QP not solved, or not better)
    status: Int[Array, ""]  # λ-QP status


def optimal_weights(phi, x_prev: Float[Array, "P nx"], x_star: Float[Array, "P nx"], w_uniform) -> Weights:
    """λ minimizing Φ(x^{p−1} + Σ_i λ_i d_i) over Λ (module docstring), or the uniform weight
    `w_uniform` where the λ-QP is not solved or does no better."""
    _, b, M = weight_qp(phi, x_prev, x_star)
    sol = simplex_qp(M, b)
    uni = jnp.full_like(b, w_uniform)
    q = lambda lam: jnp.dot(b, lam) + 0.5 * jnp.dot(lam, M @ lam)  # noqa: E731
    solved = sol.status == int(Status.solved)
    # the better of the two is applied (Φ never above the uniform rule's); a solved λ-QP whose
    # λ is above the uniform weight's objective by more than its stopping tolerance (scaled, as
    # in `simplex_qp`) counts as a fallback, a tie at a flat optimum does not
    scale = jnp.maximum(jnp.max(jnp.abs(M)), jnp.max(jnp.abs(b)))
    worse = q(sol.lam) > q(uni) + 100 * TOL * scale
    take = solved & (q(sol.lam) <= q(uni))
    return Weights(lam=jnp.where(take, sol.lam, uni), fallback=~solved | worse, status=sol.status)
