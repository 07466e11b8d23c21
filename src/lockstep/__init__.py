"""lockstep: hermetic runner and worker images for Dask that refuse to mix builds."""

__version__ = "0.1.0"
