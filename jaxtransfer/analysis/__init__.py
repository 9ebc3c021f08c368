"""Post-hoc analysis: figures, tables, variability and closeness measures."""
