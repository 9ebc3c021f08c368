"""Xie et al. 2022: hidden-state variability and guided tuning."""
