"""Media types: each OCI, Docker, cosign and lockstep type named once.

The image's own (manifest, index, config, gzip layer), the empty config an
artifact carries, the manifest types a client accepts, cosign's simple-signing
payload, DSSE envelopes and Sigstore bundles, and the job bundle artifact's types
(``bundles/artifact.py``).
"""

from __future__ import annotations

# The OCI image spec.
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# An artifact's config: the empty descriptor of the image spec ("{}", data "e30=").
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
# Docker's schema 2, accepted when reading what a registry serves.
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE)
DOCKER_INDEX_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
# cosign's signature payload (the simple-signing format containers/image reads too).
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
# A DSSE envelope (cosign's legacy ``.att`` layers) and a Sigstore bundle (cosign 3's referrers).
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# A lockstep job bundle as an artifact: its type and its layers' types.
BUNDLE_ARTIFACT_TYPE = "application/vnd.lockstep.bundle.v1+json"
BUNDLE_CODE_MEDIA_TYPE = "application/vnd.lockstep.bundle.code.v1.tar"
BUNDLE_LOCK_MEDIA_TYPE = "application/vnd.lockstep.bundle.lock.v1+json"
WHEEL_MEDIA_TYPE = "application/vnd.lockstep.wheel.v1+zip"
# a bundle's environment, prebuilt for one platform and Python (bundles/prebuilt.py)
BUNDLE_ENV_MEDIA_TYPE = "application/vnd.lockstep.bundle.env.v1.tar+gzip"
