"""lockstep: hermetic runner and worker images for Dask, and a handshake that refuses to mix builds."""

__version__ = "0.1.0"
