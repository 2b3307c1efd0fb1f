"""The Python behind the workflow's rules: one module per stage."""
