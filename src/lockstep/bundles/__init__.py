"""Job bundles: the code a job ships to workers at run time, never part of an image.

Two sides share the format, the lock format (``lockfile``), the artifact
(``artifact``) and the wire protocol (``protocol``):

- the runner's side: ``format`` (a bundle read from disk and checked),
  ``lock`` (``lockstep bundle lock``; uses ``inputs``), ``ship`` (through the
  scheduler), ``remote`` (push, resolve, pull, inspect in a registry),
  ``commands``;
- the worker's side: ``store`` (the code), ``env`` + ``env_install``,
  ``env_compile``, ``env_watch`` (a bundle's environment), ``pull`` (from a
  registry), ``handlers`` (the Dask handlers), ``probe`` (the import check).

The worker's side loads no build code: a running worker imports it.
"""
