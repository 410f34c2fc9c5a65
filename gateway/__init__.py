"""driftgate.gateway: the serving process (KServe v2 / Triton gRPC inference, hot swap)."""
