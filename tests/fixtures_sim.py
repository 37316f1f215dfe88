"""Fixtures that start simulated ComfyUI servers (filled in by the simulator work)."""
