"""Experiment configs: `python -m jaxtransfer.main --config=configs/<experiment>.py[:preset]`."""
