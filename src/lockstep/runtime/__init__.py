"""lockstep.runtime."""
