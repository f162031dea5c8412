"""A shared MLflow tracking server for workers on several machines (`make server`):
PostgreSQL (Debian's `postgresql`) as the backend store, data in `<repo>/.dualmem/postgres/`, and an
MLflow server that serves the artifacts itself (stored in `<repo>/.dualmem/server-artifacts/`), on
127.0.0.1. Workers log to it with `MLFLOW_TRACKING_URI=http://127.0.0.1:<port>` (through an SSH
tunnel or a reverse proxy from other machines).

`python -m dualmem.server start|stop|status [--pg-port 5433] [--port 5001]`. PostgreSQL refuses to run
as root, so as root its commands run as the `postgres` user (the data folder is given to it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dualmem.core.errors import DataError, UserError
from dualmem.core.paths import repo_root
from dualmem.core.tracking import EXPERIMENT

PG_INSTALL = "apt-get install postgresql (Debian), then run `make server` again"
DB_USER, DB_NAME = "dualmem", "mlflow"


@dataclass(frozen=True)
class Server:
    root: Path
    pg_port: int = 5433
    port: int = 5001

    @property
    def folder(self) -> Path:
        return self.root / ".dualmem"

    @property
    def pg_data(self) -> Path:
        return self.folder / "postgres" / "data"

    @property
    def pid_file(self) -> Path:
        return self.folder / "mlflow-server.pid"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend_uri(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.pg_port}/{DB_NAME}"


def pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found and (on_path := shutil.which(name)):
        found = [Path(on_path)]
    if not found:
        raise DataError(f"PostgreSQL's {name} is not installed; fix: {PG_INSTALL}")
    return str(found[-1])


def as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tool = Path(next(c for c in cmd if c.startswith("/"))).name
        message = (result.stderr or result.stdout).strip().replace("\n", " ")[-300:]
        raise DataError(f"{tool} failed: {message}; fix: `make server-stop`, then `make server` again")


def start_postgres(s: Server) -> None:
    if not (s.pg_data / "PG_VERSION").exists():
        s.pg_data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(s.pg_data.parent, "postgres")
            shutil.chown(s.pg_data, "postgres")
        run(as_postgres([pg_bin("initdb"), "-D", str(s.pg_data), "-U", DB_USER, "--auth=trust", "-E", "UTF8"]))
    ready = subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(s.pg_port)], capture_output=True)
    if ready.returncode != 0:
        options = f"-p {s.pg_port} -c listen_addresses=127.0.0.1 -k {s.pg_data}"
        run(as_postgres([pg_bin("pg_ctl"), "-D", str(s.pg_data), "-o", options, "-l", str(s.pg_data / "server.log"),
                         "-w", "start"]))
    exists = subprocess.run([pg_bin("psql"), "-h", "127.0.0.1", "-p", str(s.pg_port), "-U", DB_USER, "-d", "postgres",
                             "-tAc", f"select 1 from pg_database where datname = '{DB_NAME}'"],
                            capture_output=True, text=True)
    if exists.stdout.strip() != "1":
        run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(s.pg_port), "-U", DB_USER, DB_NAME])


def healthy(s: Server) -> bool:
    try:
        with urllib.request.urlopen(f"{s.uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_mlflow(s: Server, timeout: float = 180.0) -> None:
    if healthy(s):
        return
    artifacts = s.folder / "server-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = str(Path(sys.executable).parent / "mlflow")
    log = (s.folder / "mlflow-server.log").open("a")
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", s.backend_uri, "--artifacts-destination",
                             artifacts.as_uri(), "--serve-artifacts", "--host", "127.0.0.1", "--port", str(s.port),
                             "--workers", "2"], stdout=log, stderr=log, start_new_session=True)
    s.pid_file.write_text(str(proc.pid))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise DataError(f"the MLflow server exited (code {proc.returncode}); "
                            f"fix: read {s.folder / 'mlflow-server.log'}")
        if healthy(s):
            return
        time.sleep(0.5)
    raise DataError(f"the MLflow server did not answer on {s.uri} within {timeout:.0f} s; "
                    f"fix: read {s.folder / 'mlflow-server.log'}")


def create_experiment(s: Server) -> None:
    """The project's experiment, with artifacts served by the server (`mlflow-artifacts:`), before any
    worker creates it with a local artifact path."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(s.uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=f"mlflow-artifacts:/{EXPERIMENT}")


def start(s: Server) -> None:
    start_postgres(s)
    start_mlflow(s)
    create_experiment(s)
    print(f"MLflow tracking server on {s.uri} (PostgreSQL on 127.0.0.1:{s.pg_port}, data in {s.pg_data.parent})\n"
          f"export MLFLOW_TRACKING_URI={s.uri}")


def stop(s: Server) -> None:
    if s.pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(s.pid_file.read_text()), signal.SIGTERM)
        s.pid_file.unlink()
    if (s.pg_data / "postmaster.pid").exists():
        subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", str(s.pg_data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, check=False)
    print("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("DUALMEM_PG_PORT", 5433)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DUALMEM_SERVER_PORT", 5001)))
    args = parser.parse_args(argv)
    s = Server(repo_root(), args.pg_port, args.port)
    try:
        if args.action == "start":
            start(s)
        elif args.action == "stop":
            stop(s)
        else:
            print(f"{s.uri}: {'up' if healthy(s) else 'down'}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
