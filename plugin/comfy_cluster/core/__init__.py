"""Pure-Python core: config, ComfyUI client, health, balancing, frames, scheduler. No nuke, no Qt."""
