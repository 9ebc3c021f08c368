"""Lee et al. 2019: fine-tuning only the top k blocks."""
