import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# No persistent compilation cache: writing some of the closed loop's CPU executables to it
# crashed pytest workers (a segmentation fault inside jax's cache serialization).
