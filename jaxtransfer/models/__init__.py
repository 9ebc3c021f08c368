"""The encoders (stacked blocks), their heads, checkpoint conversion and loading."""
