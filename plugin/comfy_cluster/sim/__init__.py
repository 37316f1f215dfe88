"""A local ComfyUI-compatible server for tests, benchmarks and the demo."""
