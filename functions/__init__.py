"""The pipeline's functions: one sub-package each, a pure ``core`` under a thin Serve ``deployment``."""
