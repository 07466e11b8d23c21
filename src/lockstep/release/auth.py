"""Registry credentials: ``lockstep.core.docker_auth`` (workers read them too)."""

from lockstep.core.docker_auth import Credentials, credentials_for, docker_config_path

__all__ = ["Credentials", "credentials_for", "docker_config_path"]
