"""lockstep.release."""
