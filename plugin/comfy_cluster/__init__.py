"""comfy_cluster: run ComfyUI workflows from Nuke on a cluster of ComfyUI servers.

Layers, imported one way only: ``core`` (pure Python) <- ``host`` (Nuke adapter) <- ``ui`` (Qt).
"""

__version__ = "0.1.0"
