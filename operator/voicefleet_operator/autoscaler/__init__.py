"""The builtin autoscaler: a pure decision, its metric sources, and the kopf timer."""
