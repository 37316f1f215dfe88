"""Pure-Python core: config, client, health, balancing, frames, scheduler. No nuke, no Qt."""
