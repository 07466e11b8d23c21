"""Pod Security "restricted", checked on every pod template a release renders.

The Kubernetes Pod Security Standards' ``restricted`` profile (baseline
included), control by control, as the admission controller applies it to a
pod, plus what lockstep asks beyond it: a read-only root filesystem and no
service-account token. ``release.render`` refuses a template with any
problem, so no release ships a pod a restricted namespace would reject.

checkov (the test suite runs it on the rendered files) covers most of these;
it has no check for the volume types, ``procMount``, ``sysctls``,
SELinux options, AppArmor, host ports, ``hostProcess`` or ``runAsUser: 0``
(docs/design.md §4.10), which is why this exists. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pod_specs(doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, pod spec)`` for every pod template in a Kubernetes object."""
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    name = f"{kind} {doc.get('metadata', {}).get('name', '?')}"
    if kind == "Pod":
        yield name, spec
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield name, spec.get("template", {}).get("spec", {})
    elif kind == "CronJob":
        yield name, spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif kind == "DaskCluster":
        yield f"{name} scheduler", spec.get("scheduler", {}).get("spec", {})
        yield f"{name} worker", spec.get("worker", {}).get("spec", {})
    elif kind == "DaskWorkerGroup":
        yield name, spec.get("worker", {}).get("spec", {})


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in CONTAINER_LISTS:
        for container in pod.get(key) or []:
            if isinstance(container, dict):
                yield container


def _selinux(context: dict[str, Any]) -> str | None:
    options = context.get("seLinuxOptions") or {}
    if options.get("type", "") not in SELINUX_TYPES or options.get("user") or options.get("role"):
        return f"seLinuxOptions {options} (only the container types, no user or role)"
    return None


def problems(pod: dict[str, Any]) -> list[str]:
    """Every way ``pod`` (a PodSpec) breaks "restricted" or lockstep's additions."""
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(f"{host}: true")
    if (pod_ctx.get("windowsOptions") or {}).get("hostProcess"):
        found.append("windowsOptions.hostProcess: true")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= VOLUME_TYPES:
            found.append(f"volume {volume.get('name')!r} is {sorted(kinds - VOLUME_TYPES)}")
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')!r} is not a safe one")
    problem = _selinux(pod_ctx)
    if problem:
        found.append(problem)
    if (pod_ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
        found.append("appArmorProfile Unconfined")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    if pod.get("automountServiceAccountToken") is not False:
        found.append("automountServiceAccountToken is not false (lockstep needs no token)")
    for container in _containers(pod):
        name = f"container {container.get('name', '?')!r}"
        ctx = container.get("securityContext") or {}
        if ctx.get("privileged"):
            found.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (ctx.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in SECCOMP_TYPES:
            found.append(f"{name}: seccompProfile is {seccomp or 'unset'}, not RuntimeDefault")
        capabilities = ctx.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities.drop does not hold ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            found.append(f"{name}: capabilities.add {sorted(added)}")
        if ctx.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {ctx['procMount']}")
        problem = _selinux(ctx)
        if problem:
            found.append(f"{name}: {problem}")
        if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
            found.append(f"{name}: appArmorProfile Unconfined")
        if (ctx.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"{name}: windowsOptions.hostProcess: true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
        if ctx.get("readOnlyRootFilesystem") is not True:
            found.append(f"{name}: readOnlyRootFilesystem is not true")
    return found
