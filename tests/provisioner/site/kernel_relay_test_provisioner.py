"""
A kernel provisioner for kernel-relay's tests, registered through a real entry point.

It launches kernels like jupyter_client's LocalProvisioner, but marks their environment with
``KERNEL_RELAY_TEST_PROVISIONER`` (its ``marker`` setting, from the kernelspec) and records each
launch, so a test can prove that a kernel started through the relay went through the kernelspec's
provisioner.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode

ENV_VAR = "KERNEL_RELAY_TEST_PROVISIONER"

launches: list[str] = []
"""Kernel ids launched through this provisioner in this process, oldest first."""


class RelayTestProvisioner(LocalProvisioner):  # type: ignore[misc]
    """LocalProvisioner plus an environment marker and a launch record."""

    marker = Unicode("1", config=True, help="Value given to KERNEL_RELAY_TEST_PROVISIONER.")

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)
        kwargs["env"][ENV_VAR] = self.marker
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        info = await super().launch_kernel(cmd, **kwargs)
        launches.append(self.kernel_id)
        return info
