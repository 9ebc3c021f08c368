"""Tamkin et al. 2020: partial reinitialization, permutations, probes."""
