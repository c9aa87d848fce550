"""ecjax: vectorized chance-constrained distributed MPC for peer-to-peer energy communities."""
