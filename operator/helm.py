"""The adapter over pyhelm3: one release per tenant, of its Plan's chart.

helm is the expensive part of a reconcile (a process of about 0.2 CPU-s for
each `status`, `get values` or `show chart`, more for an install), so it runs
only when something differs: what is deployed is read from the release's
own Secret on the API server (`sh.helm.release.v1.NAME.vN`: its status, its
chart, the values it was given, the objects of its manifest), compared with
what should be, and helm runs when they differ or an object is missing.
Every helm process takes a slot of `work.Slots` first. Charts are directories
on disk by then (`charts_source.ChartCache`): no `helm show` runs here.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import kopf
from pyhelm3 import Client, Command
from pyhelm3 import errors as helm_errors
from pyhelm3.models import Chart

from tenantry.core.resources import ReleaseSummary
from tenantry.operator import metrics
from tenantry.operator.errors import InvalidSpec
from tenantry.operator.kube import Cluster, ReleaseRecord
from tenantry.operator.provisioning import INVALID_VALUES
from tenantry.operator.provisioning import Chart as LocalChart
from tenantry.operator.work import Slots

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class BoundedCommand(Command):
    """pyhelm3's command runner, one slot per helm process, each counted.

    A cancelled caller (shutdown, a deleted Tenant's timer) terminates its
    helm process: pyhelm3 terminates the process it started, and that is
    helm itself because the shell line starts with `exec` (pyhelm3 runs
    helm through `sh -c`, and dash would otherwise leave helm running,
    orphaned, when the shell is terminated).

    An operator killed outright (SIGKILL, OOM) takes its helm processes with it:
    helm starts under `setpriv --pdeathsig KILL` (util-linux). Orphaned, helm would
    go on reading the values the operator was still writing to its stdin, and
    install a release with none of them."""

    def __init__(self, slots: Slots, **options: Any) -> None:
        super().__init__(**options)
        self.slots = slots
        self.helm = options.get("executable", "helm")
        setpriv = shutil.which("setpriv")
        self.launch = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []

    def exec_helm(self) -> None:
        """From now on the shell replaces itself with helm (after pyhelm3 has read the
        version, which it runs without a shell)."""
        self._executable = "exec"

    async def run(self, command: list[str], input: bytes | None = None) -> bytes:
        name = str(command[0]) if command else "helm"
        if self._executable == "exec":
            command = [*self.launch, self.helm, *command]
        async with self.slots.slot():
            try:
                output: bytes = await super().run(command, input)
            except helm_errors.Error:
                metrics.HELM_OPERATIONS.labels(command=name, result="failed").inc()
                raise
        metrics.HELM_OPERATIONS.labels(command=name, result="ok").inc()
        return output


def client(executable: str, timeout: str, slots: Slots) -> Client:
    command = BoundedCommand(slots, executable=executable, default_timeout=timeout)
    helm = Client(command, executable=executable, default_timeout=timeout)
    command.exec_helm()
    return helm


def command_of(client: Client) -> Command:
    """The client's command runner (pyhelm3 keeps it private): for `helm pull` and charts."""
    command: Command = client._command
    return command


class Releases:
    def __init__(self, client: Client, timeout: str, cluster: Cluster) -> None:
        self.client = client
        self.timeout = timeout
        self.cluster = cluster

    def _helm_chart(self, chart: LocalChart) -> Chart:
        """pyhelm3's chart for a directory on disk: installed from there, with no `helm show`."""
        metadata = {"apiVersion": "v2", "name": chart.name, "version": chart.version}
        # pyhelm3 takes its runner positionally; the pydantic plugin sees only fields.
        return Chart(command_of(self.client), ref=chart.path, metadata=metadata)  # type: ignore[misc]

    async def ensure(
        self,
        name: str,
        namespace: str,
        local: LocalChart,
        values: dict[str, Any],
        logger: Logger,
    ) -> tuple[ReleaseSummary, bool]:
        """Install or upgrade when the chart or the values differ from what is deployed, or
        an object of the release is missing; the release, and whether helm changed it.

        Never waits for Pods: readiness of the workload is the instance's own
        business, and a test bed without kubelets has none.
        """
        chart = self._helm_chart(local)
        record = await self.cluster.release_record(namespace, name)
        if record is not None:
            differs = _differences(record, chart, values)
            if not differs:
                missing = await self.cluster.missing(record.objects)
                if not missing:
                    return _summary(record, local), False
                differs = "lacks " + ", ".join(
                    f"{ref.kind} {ref.namespace}/{ref.name}" for ref in missing
                )
            logger.info(f"Release {namespace}/{name} revision {record.revision} {differs}")
        options: dict[str, Any] = {
            "namespace": namespace,
            "create_namespace": False,
            "wait": False,
            "timeout": self.timeout,
        }
        try:
            if (
                record is not None
                and record.status in ("failed", "pending-install")
                and record.revision == 1
            ):
                # An install that failed (a busy API server), or that was cut short (an
                # operator killed, its helm with it: pending for good, since a Tenant's
                # reconciles take turns), is done again from scratch, rather than upgraded
                # into revision 2 over a broken revision 1.
                await self.client.uninstall_release(name, namespace=namespace, wait=False)
                record = None
            if record is None or record.status in ("deployed", "failed", "superseded"):
                revision = await self.client.install_or_upgrade_release(
                    name, chart, values, **options
                )
            else:  # pending-*, uninstalling: pyhelm3 rolls back or finishes it first
                revision = await self.client.ensure_release(name, chart, values, **options)
        except helm_errors.FailedToRenderChartError as error:
            raise InvalidSpec(
                f"spec.values: the chart cannot render them: {_stderr(error)}"
            ) from error
        except helm_errors.Error as error:
            if refused := schema_refusal(error):
                raise InvalidSpec(refused, reason=INVALID_VALUES) from error
            raise kopf.TemporaryError(f"helm failed: {_stderr(error)}", delay=5) from error
        summary = ReleaseSummary(
            name=name,
            revision=revision.revision,
            chart_version=local.version,
            status=revision.status.value,
            chart=local.name,
            source=local.source,
            digest=local.digest,
        )
        return summary, True

    async def uninstall(self, name: str, namespace: str, *, namespace_going: bool = False) -> bool:
        """Uninstall the release; False when there was none, or when `namespace_going`
        (it is about to be deleted) and that removes everything of the release: no helm
        process then, which matters when a thousand Tenants are deleted at once."""
        record = await self.cluster.release_record(namespace, name)
        if record is None or (namespace_going and record.confined_to(namespace)):
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
        finally:
            self.cluster.forget_records(namespace)
        return True


def _differences(record: ReleaseRecord, chart: Chart, values: dict[str, Any]) -> str:
    """How the recorded release differs from what should be deployed ("" when it does not)."""
    if record.status != "deployed":
        return f"is {record.status}"
    if (record.chart_name, record.chart_version) != (chart.metadata.name, chart.metadata.version):
        return (
            f"has chart {record.chart_name} {record.chart_version}, not "
            f"{chart.metadata.name} {chart.metadata.version}"
        )
    if record.values != values:
        changed = sorted(
            key
            for key in record.values.keys() | values.keys()
            if record.values.get(key) != values.get(key)
        )
        return f"has other values ({', '.join(changed)})"
    return ""


def _summary(record: ReleaseRecord, local: LocalChart) -> ReleaseSummary:
    return ReleaseSummary(
        name=record.name,
        revision=record.revision,
        chart_version=record.chart_version,
        status=record.status,
        chart=record.chart_name,
        source=local.source,
        digest=local.digest,
    )


def schema_refusal(error: helm_errors.Error) -> str | None:
    """helm's whole message when the chart's values.schema.json refused the values (it
    names every offending value, one a line), else None."""
    text = error.stderr.decode(errors="replace") if error.stderr else str(error)
    if "don't meet the specifications of the schema" not in text:
        return None
    lines = [line.strip().removeprefix("Error: ") for line in text.strip().splitlines()]
    return " ".join(line for line in lines if line)


def _stderr(error: helm_errors.Error) -> str:
    return (
        error.stderr.decode(errors="replace").strip().splitlines()[-1]
        if error.stderr
        else str(error)
    )
