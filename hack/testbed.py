"""A real local control plane and its neighbours, started from binaries.

No Docker here, so no kind: like controller-runtime's envtest, this starts
etcd, kube-apiserver and kube-controller-manager (namespace deletion and
garbage collection need it) as plain processes, and PostgreSQL, Redis and
stripe-mock beside them, each in its own state directory on free loopback
ports. The pytest fixtures and `make cluster-up` / `make dev` both use it.

    python hack/testbed.py up [--state DIR]     # control plane, in the background
    python hack/testbed.py down [--state DIR]
    python hack/testbed.py status [--state DIR]
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ADMIN_TOKEN_BYTES = 24


class TestbedError(RuntimeError):
    """A component could not be started; the message says which and why."""


def tool_paths() -> dict[str, Path]:
    """Where hack/install-tools.sh keeps each built binary (by version)."""
    out = subprocess.run(
        ["bash", str(HERE / "install-tools.sh"), "paths"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name: Path(path) for name, path in (line.split("=", 1) for line in out.split())}


def ensure_tools(*names: str) -> dict[str, Path]:
    paths = tool_paths()
    missing = [n for n in names if not paths[n].exists()]
    if missing:
        print(f"testbed: building {', '.join(missing)} (first run only)", file=sys.stderr)
        subprocess.run(["bash", str(HERE / "install-tools.sh"), "all"], check=True)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check, what: str, timeout: float, process: subprocess.Popen[bytes] | None, log: Path
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise TestbedError(
                f"{what} exited with {process.returncode}; last log lines:\n{tail(log)}"
            )
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ssl.SSLError):
            pass
        time.sleep(0.1)
    raise TestbedError(f"{what} not ready after {timeout:.0f}s; last log lines:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class Service:
    """One started process with its log, stopped by `stop`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(name: str, argv: list[str], state: Path, env: dict[str, str] | None = None) -> Service:
    log = state / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not them
        )
    (state / f"{name}.pid").write_text(str(process.pid))
    return Service(name, process, log)


# ----------------------------------------------------------- control plane


@dataclass
class ControlPlane:
    state: Path
    url: str = ""
    token: str = ""
    services: list[Service] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def start(self, timeout: float = 90) -> ControlPlane:
        tools = ensure_tools("etcd", "kube-apiserver", "kube-controller-manager")
        self.state.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = spawn(
            "etcd",
            [
                str(tools["etcd"]),
                "--data-dir", str(self.state / "etcd"),
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
            self.state,
        )  # fmt: skip
        self.services.append(etcd)
        wait_until(
            lambda: urllib.request.urlopen(f"{etcd_url}/health", timeout=1).status == 200,
            "etcd", timeout, etcd.process, etcd.log,
        )  # fmt: skip

        self.token = base64.urlsafe_b64encode(os.urandom(ADMIN_TOKEN_BYTES)).decode().rstrip("=")
        tokens = self.state / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)
        sa_key = self.state / "sa.key"
        if not sa_key.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            sa_key.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
            sa_key.chmod(0o600)
        self.url = f"https://127.0.0.1:{api_port}"
        apiserver = spawn(
            "kube-apiserver",
            [
                str(tools["kube-apiserver"]),
                "--etcd-servers", etcd_url,
                "--cert-dir", str(self.state / "certs"),
                "--secure-port", str(api_port),
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                # Room for the scale the benchmarks prove: a Service per tenant
                # instance (a /24 ran out at ~250 tenants), and the concurrent
                # requests of an operator working a thousand Tenants at once.
                "--service-cluster-ip-range", "10.96.0.0/16",
                "--max-requests-inflight", "800",
                "--max-mutating-requests-inflight", "400",
                "--authorization-mode", "RBAC",
                "--token-auth-file", str(tokens),
                "--service-account-issuer", self.url,
                "--service-account-key-file", str(sa_key),
                "--service-account-signing-key-file", str(sa_key),
                "--disable-admission-plugins", "ServiceAccount",
                "--allow-privileged",
                "--v", "0",
            ],
            self.state,
        )  # fmt: skip
        self.services.append(apiserver)
        self._write_kubeconfig()
        wait_until(self._ready, "kube-apiserver", timeout, apiserver.process, apiserver.log)

        controller_manager = spawn(
            "kube-controller-manager",
            [
                str(tools["kube-controller-manager"]),
                "--kubeconfig", str(self.kubeconfig),
                "--controllers", "namespace,garbagecollector,serviceaccount-token,"
                "serviceaccount,deployment,replicaset",
                "--service-account-private-key-file", str(sa_key),
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--secure-port", "0",
                # A thousand namespaces deleted at once: more workers, and a client
                # rate (default 20/s) that lets each walk every resource type quickly.
                "--concurrent-namespace-syncs", "16",
                "--kube-api-qps", "200",
                "--kube-api-burst", "400",
            ],
            self.state,
        )  # fmt: skip
        self.services.append(controller_manager)
        time.sleep(0.5)
        if controller_manager.process.poll() is not None:
            raise TestbedError(f"kube-controller-manager exited:\n{tail(controller_manager.log)}")
        return self

    def _ready(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tenantry",
                    "cluster": {"server": self.url, "insecure-skip-tls-verify": True},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "tenantry",
                    "context": {"cluster": "tenantry", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "tenantry",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def halt_apiserver(self) -> None:
        """Stop kube-apiserver (etcd and the controller manager run on), as an outage
        or an upgrade of the control plane would; `resume_apiserver` brings it back."""
        self._apiserver().stop()

    def resume_apiserver(self, timeout: float = 90) -> None:
        """Start kube-apiserver again as it was: the same port, certificates and data."""
        old = self._apiserver()
        argv = [str(arg) for arg in old.process.args]  # type: ignore[union-attr]
        new = spawn("kube-apiserver", argv, self.state)
        self.services[self.services.index(old)] = new
        wait_until(self._ready, "kube-apiserver", timeout, new.process, new.log)

    def _apiserver(self) -> Service:
        return next(s for s in self.services if s.name == "kube-apiserver")

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()


# --------------------------------------------------------------- databases


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise TestbedError(f"{name} not found: install PostgreSQL (make deps does, as root)")
    return str(candidates[-1])


@dataclass
class Postgres:
    state: Path
    port: int = 0
    service: Service | None = None
    root: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://tenantry@127.0.0.1:{self.port}/tenantry"

    def start(self, timeout: float = 30, port: int | None = None) -> Postgres:
        """Start the server, on `port` if given (a restart after `halt` keeps its data)."""
        owner = _unprivileged_owner()
        if owner is not None and self.root is None:
            # The server runs as `nobody`, who cannot reach into root's private
            # temporary directories: it gets a directory of its own in /tmp.
            self.root = Path(tempfile.mkdtemp(prefix="tenantry-postgres-"))
            (self.root / "state-dir").write_text(str(self.state))
        root = self.root or self.state
        data = root / "pgdata"
        root.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            _chown_tree(root, owner)
            _run_as(owner, [_postgres_bin("initdb"), "-D", str(data), "-U", "tenantry",
                            "--auth=trust", "--no-sync", "-E", "UTF8"])  # fmt: skip
        self.port = port or free_port()
        socket_dir = root / "sockets"
        socket_dir.mkdir(exist_ok=True)
        _chown_tree(root, owner)
        argv = [
            _postgres_bin("postgres"), "-D", str(data), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", str(socket_dir),
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=256MB",
        ]  # fmt: skip
        self.service = spawn("postgres", _as_user(owner, argv), self.state)
        wait_until(self._accepts, "postgres", timeout, self.service.process, self.service.log)
        subprocess.run(
            [_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "tenantry",
             "tenantry"],
            capture_output=True, check=False,
        )  # fmt: skip
        return self

    def _accepts(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return (
                subprocess.run(
                    [_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                    capture_output=True,
                ).returncode
                == 0
            )

    def halt(self, timeout: float = 30) -> None:
        """Stop the server as an operator would for maintenance: a fast shutdown, which
        cuts every session and keeps every committed transaction. The data stays, for
        `start(port=self.port)`."""
        if self.service and self.service.process.poll() is None:
            self.service.process.send_signal(signal.SIGINT)
            self.service.process.wait(timeout)

    def stop(self) -> None:
        if self.service:
            self.service.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _unprivileged_owner() -> str | None:
    """PostgreSQL refuses to run as root: run it as `nobody` when we are root."""
    return "nobody" if os.geteuid() == 0 else None


def _chown_tree(path: Path, owner: str | None) -> None:
    if owner:
        subprocess.run(["chown", "-R", owner, str(path)], check=True)


def _as_user(owner: str | None, argv: list[str]) -> list[str]:
    if owner is None:
        return argv
    user = pwd.getpwnam(owner)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *argv]


def _run_as(owner: str | None, argv: list[str], check: bool = True) -> None:
    result = subprocess.run(_as_user(owner, argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


@dataclass
class Redis:
    state: Path
    port: int = 0
    service: Service | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15, port: int | None = None) -> Redis:
        server = shutil.which("redis-server")
        if not server:
            raise TestbedError("redis-server not found: install Redis (make deps does, as root)")
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        argv = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.state)]  # fmt: skip
        self.service = spawn("redis", argv, self.state)
        wait_until(self._pong, "redis", timeout, self.service.process, self.service.log)
        return self

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.service:
            self.service.stop()


@dataclass
class StripeMock:
    state: Path
    port: int = 0
    service: Service | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> StripeMock:
        binary = ensure_tools("stripe-mock")["stripe-mock"]
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # Loopback only: a test server has no business on the machine's other addresses.
        argv = [str(binary), "-http-addr", f"127.0.0.1:{self.port}",
                "-https-addr", f"127.0.0.1:{free_port()}"]  # fmt: skip
        self.service = spawn("stripe-mock", argv, self.state)
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() is None,
            "stripe-mock", timeout, self.service.process, self.service.log,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.service:
            self.service.stop()


# ------------------------------------------------------------ chart sources


@dataclass
class ChartRepository:
    """A Helm chart repository on loopback: `add` packages a chart directory into
    `state` with `helm package`, `helm repo index` writes index.yaml, and a
    plain HTTP server serves the directory."""

    state: Path
    helm: Path
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "start the repository first"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ChartRepository:
        self.state.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietHandler, directory=str(self.state))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def add(self, chart: Path) -> Path:
        """Package `chart` into the repository and index it; the package."""
        out = subprocess.run(
            [str(self.helm), "package", str(chart), "--destination", str(self.state)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        subprocess.run([str(self.helm), "repo", "index", str(self.state), "--url", self.url],
                       check=True, capture_output=True)  # fmt: skip
        return Path(out.strip().rsplit(": ", 1)[-1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class OciRegistry:
    """An OCI registry on loopback (`crane registry serve`, in memory); `push` a
    packaged chart with `helm push --plain-http`."""

    state: Path
    helm: Path
    port: int = 0
    service: Service | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> OciRegistry:
        crane = tool_paths()["crane"]
        if not crane.exists():
            subprocess.run(["bash", str(HERE / "install-tools.sh"), "crane"], check=True)
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [str(crane), "registry", "serve", "--address", self.host]
        self.service = spawn("oci-registry", argv, self.state)
        wait_until(
            lambda: urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).status == 200,
            "the OCI registry", timeout, self.service.process, self.service.log,
        )  # fmt: skip
        return self

    def push(self, package: Path, repository: str = "charts") -> str:
        """Push a packaged chart; its reference without the version (`oci://HOST/REPO/NAME`)."""
        out = subprocess.run(
            [str(self.helm), "push", str(package), f"oci://{self.host}/{repository}",
             "--plain-http"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        pushed = next(line for line in (out.stdout + out.stderr).splitlines()
                      if line.startswith("Pushed: "))  # fmt: skip
        name = pushed.removeprefix("Pushed: ").rsplit(":", 1)[0]
        return f"oci://{name}"

    def stop(self) -> None:
        if self.service:
            self.service.stop()


# --------------------------------------------------------------------- CLI


def _stop_pids(state: Path) -> list[str]:
    stopped = []
    for pidfile in sorted(state.glob("*.pid")):
        try:
            pid = int(pidfile.read_text())
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
        stopped.append(pidfile.stem)
        pidfile.unlink(missing_ok=True)
    return stopped


def _running(state: Path) -> bool:
    pidfile = state / "kube-apiserver.pid"
    if not pidfile.exists() or not (state / "kubeconfig").exists():
        return False
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state", type=Path, default=REPO / ".tenantry" / "cluster")
    args = parser.parse_args(argv)
    state: Path = args.state.resolve()
    kubeconfig = state.parent / "kubeconfig"

    if args.command == "down":
        stopped = _stop_pids(state)
        shutil.rmtree(state, ignore_errors=True)
        kubeconfig.unlink(missing_ok=True)
        print(f"Stopped {', '.join(stopped)}." if stopped else "No control plane was running.")
        return 0
    if args.command == "status" or _running(state):
        running = _running(state)
        state_word = "is running" if running else "is not running"
        print(f"Control plane {state_word}; kubeconfig: {kubeconfig}")
        return 0 if running else 1
    _stop_pids(state)
    shutil.rmtree(state, ignore_errors=True)
    plane = ControlPlane(state)
    try:
        plane.start()
    except TestbedError as error:
        plane.stop()
        print(f"testbed: {error}", file=sys.stderr)
        return 1
    shutil.copy(plane.kubeconfig, kubeconfig)
    print(f"Control plane is up at {plane.url}; kubeconfig: {kubeconfig}")
    cwd = Path.cwd()
    shown = kubeconfig.relative_to(cwd) if kubeconfig.is_relative_to(cwd) else kubeconfig
    print(f"Try: kubectl --kubeconfig {shown} get namespaces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
