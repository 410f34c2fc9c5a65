"""The client commands of ``driftgate``, built on ``driftgate.client``: the control commands
(deploy, traffic, shadow, promote, rollback, status, history), the monitor's queries (drift,
accuracy, events, retrain) and health. Each module has ``register(subparsers)``."""
