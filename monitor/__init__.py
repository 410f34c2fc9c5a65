"""driftgate monitor: the sidecar that computes drift and accuracy."""
