"""The OCI room: media types, references (one grammar), artifact manifests, the
distribution client and registry credentials.

Standard library only and nothing of the build, so release (on the build host)
and bundle pull (on a worker) share it.
"""
