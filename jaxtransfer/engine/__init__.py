"""Running groups of trials as jit(vmap(step)): batching, checkpoints, evaluation, records."""
