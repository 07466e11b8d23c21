"""The registry client: ``lockstep.core.distribution`` (workers pull bundles with it too)."""

from lockstep.core.distribution import (
    MANIFEST_MEDIA_TYPES,
    PushStats,
    RegistryClient,
    Response,
    split_host_port,
    tls_failed,
)

__all__ = [
    "MANIFEST_MEDIA_TYPES",
    "PushStats",
    "RegistryClient",
    "Response",
    "split_host_port",
    "tls_failed",
]
