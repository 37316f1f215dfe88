"""Sub-commands of the ``comfy-cluster`` CLI: one module each, with ``register(subparsers)``."""
