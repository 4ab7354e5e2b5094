"""A real two-node SLURM cluster on this machine, started by the tests and torn down after them.

Debian's slurmctld / slurmd / slurm-client / munge, daemons started by hand (no systemd), two virtual
nodes ``n1`` and ``n2`` (two ``slurmd -N``) on one host, a private munged on its own socket and free
ports, so a second test session on the same machine does not collide with this one.
Facts this relies on: ../shared/reference/slurm-on-one-machine.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch")
NODES = ("n1", "n2")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
REPO = Path(__file__).resolve().parents[2]


def _unavailable(reason: str) -> None:
    """Skip with ``reason`` — or fail under CI, where these tests must run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"SLURM tests cannot run under CI: {reason}")
    pytest.skip(reason)


def _install_packages() -> None:
    """Install the Debian SLURM and munge packages when missing (root only)."""
    if all(Path(p).exists() for p in DAEMONS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        _unavailable(f"SLURM packages missing and cannot be installed without root + apt-get: {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            _unavailable(f"`{' '.join(cmd)}` failed: {done.stderr.strip().splitlines()[-1:]}")


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free right now."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _stop_pid(pid_file: Path, timeout: float = 10.0) -> None:
    """SIGTERM the daemon whose pid is in ``pid_file`` and wait until it is gone (or a zombie)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                return
            if state == "Z":  # exited; its parent reaps it a moment later
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


class SlurmCluster:
    """Two virtual nodes (n1, n2, 2 CPUs each) in one partition; clients use ``self.env``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        # munged checks every directory on its socket's path: keep it out of pytest's 0700 tmp tree.
        self.munge = Path(tempfile.mkdtemp(prefix="pipeline-munge-"))
        self.hosts_line = f"127.0.0.1 {' '.join(NODES)}  # pipeline slurm tests {os.getpid()}\n"
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "CLUSTER_PYTHON": sys.executable,
            "WANDB_MODE": "offline",
            "PYTHONUNBUFFERED": "1",
        }
        # a login shell's environment: no rank variables, no key, no W&B service address of an earlier in-process run
        for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "WANDB_API_KEY", "WANDB_SERVICE"):
            self.env.pop(key, None)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start munged, slurmctld and one slurmd per node; return once both nodes are idle."""
        self._start_munge()
        ctld_port, *node_ports = _free_ports(1 + len(NODES))
        self._write_conf(ctld_port, node_ports)
        self._add_hosts_line()
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(self.conf)], check=True, env=self.env)
        for node in NODES:
            subprocess.run(["/usr/sbin/slurmd", "-f", str(self.conf), "-N", node], check=True, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
            if states.count("idle") == len(NODES):
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM nodes did not come up: {states}; see {self.root}/*.log")

    def stop(self) -> None:
        """Cancel every job, stop the daemons, remove the hosts line and munge's directory."""
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "--user", "root", check=False)
            deadline = time.monotonic() + 20
            while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for node in NODES:
            _stop_pid(self.root / f"slurmd-{node}.pid")
        _stop_pid(self.root / "slurmctld.pid")
        _stop_pid(self.munge / "munged.pid")
        self._remove_hosts_line()
        shutil.rmtree(self.munge, ignore_errors=True)

    def _start_munge(self) -> None:
        key = self.munge / "munge.key"
        key.write_bytes(os.urandom(128))
        for path in (self.munge, key):
            shutil.chown(path, "munge", "munge")
        self.munge.chmod(0o755)
        key.chmod(0o400)
        args = [f"--{name}={self.munge / file}" for name, file in
                (("socket", "socket"), ("key-file", "munge.key"), ("pid-file", "munged.pid"),
                 ("log-file", "munged.log"), ("seed-file", "munged.seed"))]
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", *args], check=True)

    def _write_conf(self, ctld_port: int, node_ports: list[int]) -> None:
        host = socket.gethostname().split(".")[0]
        r = self.root
        (r / "state").mkdir(exist_ok=True)
        lines = [
            "ClusterName=pipetest",
            # Lightning's MASTER_PORT is 15000 + the job id's last 4 digits: a second session's cluster on this
            # host numbers its jobs from elsewhere, else both clusters' job 2 listen on port 15002 (EADDRINUSE)
            f"FirstJobId={100 * (os.getpid() % 90 + 10)}",
            f"SlurmctldHost={host}",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire: a requeued job restarts ~10 s later instead of ~2 min
            f"AuthInfo=socket={self.munge / 'socket'},cred_expire=10",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "JobRequeue=1",
            "KillWait=15",
            "MinJobAge=600",
            "ReturnToService=2",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool-%n'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd-%n.log'}",
            *(f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs=2 RealMemory=8000"
              for n, p in zip(NODES, node_ports, strict=True)),
            f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")  # slurm joins a last line without newline to nothing

    def _add_hosts_line(self) -> None:
        # the node names are MASTER_ADDR for multi-node jobs, so they must resolve
        with open("/etc/hosts", "a") as f:
            f.write(self.hosts_line)

    def _remove_hosts_line(self) -> None:
        hosts = Path("/etc/hosts")
        text = hosts.read_text()
        if self.hosts_line in text:
            with open(hosts, "w") as f:  # in place: /etc/hosts may be a bind mount
                f.write(text.replace(self.hosts_line, ""))

    # --- clients ---------------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command with the cluster's environment; raise with its output when ``check`` and it fails."""
        done = subprocess.run(cmd, env=self.env, cwd=cwd, capture_output=True, text=True)
        if check and done.returncode:
            raise AssertionError(f"{' '.join(cmd)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def sbatch(self, *args: str, cwd: Path) -> int:
        """Submit with ``sbatch --parsable`` from ``cwd``; return the job id."""
        return int(self.run("sbatch", "--parsable", *args, cwd=cwd).stdout.strip().split(";")[0])

    def job(self, job_id: int | str) -> dict[str, str]:
        """``scontrol show job`` as a dict (finished jobs stay visible for MinJobAge)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0]))

    def wait(self, job_id: int | str, timeout: float, states: set[str] = FINAL_STATES) -> dict[str, str]:
        """Poll until the job reaches one of ``states``; return its record (``sbatch --wait`` notices late)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info["JobState"] in states:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {info['JobState']} after {timeout:.0f} s")
            time.sleep(1)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The two-node cluster, shared by every SLURM test of the session."""
    if sys.platform != "linux":
        _unavailable("SLURM tests need Linux")
    if os.geteuid() != 0:
        _unavailable("SLURM tests need root (to install packages, start munged/slurmd, edit /etc/hosts)")
    _install_packages()
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits dataset as real shards (``pipeline shards digits``)."""
    from pipeline import cli

    out = tmp_path_factory.mktemp("digits")
    assert cli.main(["shards", "digits", "--out", str(out)]) == 0
    return out
