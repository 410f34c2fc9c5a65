"""driftgate.core: the shared leaf layer.

Errors, the model repository and deployment state, the binning rules of the reference
profile, gRPC plumbing and the generated stubs, and CLI helpers. It imports nothing from
``driftgate.gateway``, ``driftgate.monitor`` or ``driftgate.converter``.
"""
