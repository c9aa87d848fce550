"""The one bounded loop of ecjax (STYLE habit 4).

`bounded_while(cond, body, init, max_steps)` is `lax.while_loop` with a hard
cap on the number of body calls. Under `vmap` the loop runs until the slowest
element stops (finished elements are held fixed by a select), so the cap is
what bounds a batch's cost; callers record per-element step counts themselves.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PyTree


class _Carry(eqx.Module):
    k: Int[Array, ""]
    state: PyTree


def bounded_while(cond, body, init, max_steps: int):
    """Run `state = body(state)` while `cond(state)` and fewer than `max_steps` calls.

    **Arguments:**
    - `cond`: state -> bool scalar.
    - `body`: state -> state (same structure).
    - `init`: initial state pytree.
    - `max_steps`: Python int, the hard cap on body calls.

    **Returns:** the final state.
    """
    if max_steps < 0:
        raise ValueError(f"`max_steps` must be >= 0, got {max_steps}.")

    def _cond(c):
        return (c.k < max_steps) & cond(c.state)

    def _body(c):
        return _Carry(k=c.k + 1, state=body(c.state))

    out = jax.lax.while_loop(_cond, _body, _Carry(k=jnp.asarray(0, jnp.int32), state=init))
    return out.state
