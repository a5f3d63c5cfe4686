"""Where a Tenant's chart comes from, and a local copy of it named by its digest.

A Plan names one source (an OCI reference, a chart repository and a chart
name, a path inside the operator's image) or none (the bundled
customer-instance chart), and a Tenant may pin another version: `chart_ref`
decides which chart and version a Tenant runs, without I/O. `ChartCache`
makes that a chart directory on disk, keeping these invariants:

- A remote chart is pulled with `helm pull` (through pyhelm3's command
  runner, so it takes a helm slot like any helm process), hashed, and
  unpacked under `<cache>/sha256-<hex>`: the same bytes are one directory
  whatever they are called, and a directory is complete before it has its
  name (unpacked beside it, then renamed), so a crash never leaves half a
  chart behind. `<cache>/refs/` remembers the digest each source and
  version resolved to: a restarted operator pulls nothing it already holds.
  A version is taken as immutable, as chart repositories and registries
  treat them.
- Concurrent callers of one source and version share one pull, in a task of
  its own: one caller cancelled (its Tenant deleted) cancels nobody else's.
- A failed pull is remembered for a growing backoff (5 s doubling to 5
  minutes): a registry that is down is asked once per backoff by all the
  Tenants on its Plan, not once by each. Failures are `ChartNotFound` (the
  version or chart does not exist) or `ChartUnavailable` (the source did not
  answer); both are `NotReady`, shown in the Tenant's Ready condition.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import io
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyhelm3 import Command
from pyhelm3 import errors as helm_errors

from tenantry.core.resources import ChartSpec
from tenantry.operator.errors import InvalidSpec, NotReady
from tenantry.operator.provisioning import Chart

BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0

# What helm says when the source answered but has no such chart or version.
_MISSING = re.compile(
    r"not found|manifest unknown|no chart (name|version) found|404", re.IGNORECASE
)


class ChartNotFound(NotReady):
    """The source answered, and has no such chart or version."""

    def __init__(self, message: str, delay: float = BACKOFF_FIRST) -> None:
        super().__init__("ChartNotFound", message)
        self.delay = delay


class ChartUnavailable(NotReady):
    """The source did not answer (down, unreachable, refusing); tried again after `delay`."""

    def __init__(self, message: str, delay: float = BACKOFF_FIRST) -> None:
        super().__init__("ChartUnavailable", message)
        self.delay = delay


@dataclass(frozen=True)
class ChartRef:
    """One chart at one version, wherever it lives."""

    kind: Literal["bundled", "path", "oci", "repository"]
    location: str  # the OCI reference, the repository URL, or the path
    name: str | None = None  # the chart's name in a repository
    version: str | None = None

    @property
    def source(self) -> str:
        if self.kind == "repository":
            return f"{self.location} {self.name}"
        return self.location

    @property
    def described(self) -> str:
        return f"{self.source} {self.version}" if self.version else self.source

    def key(self) -> str:
        """A file name for this source and version."""
        raw = "\n".join((self.kind, self.location, self.name or "", self.version or ""))
        return hashlib.sha256(raw.encode()).hexdigest()


def chart_ref(plan_name: str, chart: ChartSpec, pin: str | None, bundled: Path) -> ChartRef:
    """The chart a Tenant on Plan `plan_name` runs: the Plan's, at the Tenant's pinned
    version if it has one."""
    if chart.oci is not None:
        return ChartRef("oci", chart.oci.rstrip("/"), version=pin or chart.version)
    if chart.repository is not None:
        return ChartRef(
            "repository", chart.repository.rstrip("/"), chart.name, pin or chart.version
        )
    if pin is not None:
        where = "a path in the operator's image" if chart.path else "the bundled chart"
        raise InvalidSpec(
            f"spec.chartVersion: Plan {plan_name} runs {where}, which has one version; pin "
            "versions only of a chart from an OCI registry or a chart repository, or remove "
            "spec.chartVersion."
        )
    if chart.path is not None:
        return ChartRef("path", chart.path, version=chart.version)
    return ChartRef("bundled", str(bundled))


def backoff(failures: int) -> float:
    """Seconds before source and version are asked again after `failures` failures."""
    return float(min(BACKOFF_FIRST * 2 ** max(failures - 1, 0), BACKOFF_MAX))


def pull_failure(ref: ChartRef, stderr: str, delay: float) -> ChartNotFound | ChartUnavailable:
    """helm's failed pull as ours: missing, or not reachable."""
    lines = [line.removeprefix("Error: ").strip() for line in stderr.strip().splitlines()]
    detail = "; ".join(line for line in lines if line) or "helm pull failed"
    if _MISSING.search(detail) and "connection refused" not in detail:
        return ChartNotFound(
            f"Chart {ref.described} does not exist ({detail}); fix the Plan's spec.chart or "
            "the Tenant's spec.chartVersion, or publish that version.",
            delay,
        )
    return ChartUnavailable(
        f"Chart {ref.described} could not be fetched ({detail}); trying again in {delay:g} s.",
        delay,
    )


@dataclass
class _Failure:
    error: ChartNotFound | ChartUnavailable
    failures: int
    until: float


class ChartCache:
    """Charts by source and version, pulled once, kept by digest (see the module's notes)."""

    def __init__(
        self,
        command: Command,
        directory: Path,
        bundled: Chart,
        plain_http: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.command = command
        self.directory = directory
        self.bundled = bundled
        self.plain_http = frozenset(plain_http)
        self._clock = clock
        self._charts: dict[ChartRef, Chart] = {}
        self._pulls: dict[ChartRef, asyncio.Task[Chart]] = {}
        self._failures: dict[ChartRef, _Failure] = {}

    async def resolve(self, ref: ChartRef) -> Chart:
        if ref.kind == "bundled":
            return self.bundled
        if (chart := self._charts.get(ref)) is not None:
            return chart
        failure = self._failures.get(ref)
        if failure is not None and self._clock() < failure.until:
            raise failure.error
        task = self._pulls.get(ref)
        if task is None:
            # Shared, so in a context of its own: not the first caller's priority, nor
            # dropped with it when that caller's Tenant is deleted.
            task = asyncio.get_running_loop().create_task(
                self._fetch(ref), context=contextvars.Context()
            )
            self._pulls[ref] = task
        # Shielded: one caller cancelled does not cancel the others' answer.
        return await asyncio.shield(task)

    async def _fetch(self, ref: ChartRef) -> Chart:
        try:
            if ref.kind == "path":
                chart = await asyncio.to_thread(self._local, ref)
            else:
                chart = await self._remote(ref)
        except (ChartNotFound, ChartUnavailable) as error:
            failures = self._failure_count(ref) + 1
            error.delay = backoff(failures)
            self._failures[ref] = _Failure(error, failures, self._clock() + error.delay)
            raise
        finally:
            self._pulls.pop(ref, None)
        self._failures.pop(ref, None)
        self._charts[ref] = chart
        return chart

    def _local(self, ref: ChartRef) -> Chart:
        path = Path(ref.location)
        if path.is_file():
            chart = self._store(ref, path.read_bytes())
        elif (path / "Chart.yaml").is_file():
            chart = Chart.load(path, ref.source)
        else:
            raise ChartNotFound(
                f"No chart at {path} in the operator's image: fix the Plan's spec.chart.path."
            )
        if ref.version is not None and chart.version != ref.version:
            raise ChartNotFound(
                f"The chart at {path} is version {chart.version}, not {ref.version}: fix the "
                "Plan's spec.chart.version, or leave it out."
            )
        return chart

    async def _remote(self, ref: ChartRef) -> Chart:
        cached = await asyncio.to_thread(self._cached, ref)
        if cached is not None:
            return cached
        assert ref.version is not None  # the Plan's model requires one for remote charts
        scratch = await asyncio.to_thread(self._scratch)
        try:
            command: list[str] = ["pull"]
            if ref.kind == "oci":
                command.append(ref.location)
                if self._plain_http(ref):
                    command.append("--plain-http")
            else:
                command += [ref.name or "", "--repo", ref.location]
            command += ["--version", ref.version, "--destination", scratch]
            try:
                await self.command.run(command)
            except helm_errors.Error as error:
                stderr = error.stderr.decode(errors="replace")
                delay = backoff(self._failure_count(ref) + 1)
                raise pull_failure(ref, stderr, delay) from error
            return await asyncio.to_thread(self._store_pulled, ref, scratch)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    def _cached(self, ref: ChartRef) -> Chart | None:
        known = self._known_digest(ref)
        if known is None:
            return None
        try:
            return Chart.load(self._chart_dir(self._digest_dir(known)), ref.source, known)
        except (OSError, ValueError):
            return None  # gone from the cache: pulled again

    def _scratch(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(dir=self.directory, prefix=".pull-")

    def _store_pulled(self, ref: ChartRef, scratch: str) -> Chart:
        archives = list(Path(scratch).glob("*.tgz"))
        if len(archives) != 1:
            raise ChartUnavailable(f"helm pull of {ref.described} left no chart archive.")
        return self._store(ref, archives[0].read_bytes())

    def _store(self, ref: ChartRef, data: bytes) -> Chart:
        """Unpack a packaged chart under its digest (once), and remember that `ref` is it."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self._digest_dir(digest)
        if not target.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
            unpacking = Path(tempfile.mkdtemp(dir=self.directory, prefix=".unpack-"))
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                    archive.extractall(unpacking, filter="data")
                unpacking.rename(target)
            except OSError:
                # Another operator sharing the cache unpacked the same bytes first.
                if not target.is_dir():
                    raise
            except tarfile.TarError as error:
                raise ChartUnavailable(
                    f"Chart {ref.described} is no chart archive: {error}."
                ) from error
            finally:
                shutil.rmtree(unpacking, ignore_errors=True)
        chart = Chart.load(self._chart_dir(target), ref.source, digest)
        if ref.kind != "path":
            refs = self.directory / "refs"
            refs.mkdir(exist_ok=True)
            written = refs / f".{ref.key()}.{id(data)}"
            written.write_text(digest)
            written.rename(refs / ref.key())
        return chart

    def _plain_http(self, ref: ChartRef) -> bool:
        host = ref.location.removeprefix("oci://").split("/")[0]
        return host in self.plain_http or host.rsplit(":", 1)[0] in self.plain_http

    def _failure_count(self, ref: ChartRef) -> int:
        failure = self._failures.get(ref)
        return failure.failures if failure else 0

    def _known_digest(self, ref: ChartRef) -> str | None:
        try:
            return (self.directory / "refs" / ref.key()).read_text().strip() or None
        except OSError:
            return None

    def _digest_dir(self, digest: str) -> Path:
        return self.directory / digest.replace(":", "-")

    @staticmethod
    def _chart_dir(unpacked: Path) -> Path:
        """The chart inside an unpacked archive (helm packages it under its name)."""
        found = [p.parent for p in unpacked.glob("*/Chart.yaml")]
        if len(found) != 1:
            raise ValueError(f"{unpacked} holds no single chart")
        return found[0]
