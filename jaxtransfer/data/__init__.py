"""Reading, tokenizing and scoring tasks: GLUE, your own data, the demo set."""
