"""Sub-commands of the ``comfy-cluster`` CLI, one module each, each with ``register(subparsers)``."""
