"""Radiya-Dixit & Wang 2020: closeness to the pretrained weights, masks."""
