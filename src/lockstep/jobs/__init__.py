"""lockstep.jobs."""
