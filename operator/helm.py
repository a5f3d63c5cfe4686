"""The adapter over pyhelm3: one release of the customer-instance chart per tenant."""

from __future__ import annotations

from typing import Any

import kopf
from pyhelm3 import Client
from pyhelm3 import errors as helm_errors
from pyhelm3.models import Chart

from tenantry.core.resources import ReleaseSummary
from tenantry.operator.errors import InvalidSpec


class Releases:
    def __init__(self, client: Client, chart_path: str, timeout: str) -> None:
        self.client = client
        self.chart_path = chart_path
        self.timeout = timeout
        self._chart: Chart | None = None

    async def chart(self) -> Chart:
        if self._chart is None:
            self._chart = await self.client.get_chart(self.chart_path)
        return self._chart

    async def ensure(
        self, name: str, namespace: str, values: dict[str, Any], *, new_namespace: bool = False
    ) -> ReleaseSummary:
        """Install or upgrade, only when the chart or the values differ from what is deployed.

        In a namespace created a moment ago there is no release to compare
        with, so the status probe is skipped. Never waits for Pods: readiness
        of the workload is the instance's own business, and a test bed
        without kubelets has none.
        """
        chart = await self.chart()
        options: dict[str, Any] = {
            "namespace": namespace,
            "create_namespace": False,
            "wait": False,
            "timeout": self.timeout,
        }
        try:
            if new_namespace:
                revision = await self.client.install_or_upgrade_release(
                    name, chart, values, **options
                )
            else:
                revision = await self.client.ensure_release(name, chart, values, **options)
        except helm_errors.FailedToRenderChartError as error:
            raise InvalidSpec(
                f"spec.values: the chart cannot render them: {_stderr(error)}"
            ) from error
        except helm_errors.Error as error:
            raise kopf.TemporaryError(f"helm failed: {_stderr(error)}", delay=5) from error
        return ReleaseSummary(
            name=name,
            revision=revision.revision,
            chart_version=chart.metadata.version,
            status=revision.status.value,
        )

    async def uninstall(self, name: str, namespace: str) -> bool:
        """Uninstall the release; False when there was none."""
        try:
            await self.client.get_current_revision(name, namespace=namespace)
        except helm_errors.ReleaseNotFoundError:
            return False
        try:
            await self.client.uninstall_release(
                name, namespace=namespace, wait=False, timeout=self.timeout
            )
        except helm_errors.ReleaseNotFoundError:
            return False
        except helm_errors.Error as error:
            raise kopf.TemporaryError(
                f"helm uninstall failed: {_stderr(error)}", delay=5
            ) from error
        return True


def _stderr(error: helm_errors.Error) -> str:
    return (
        error.stderr.decode(errors="replace").strip().splitlines()[-1]
        if error.stderr
        else str(error)
    )
