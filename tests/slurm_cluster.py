"""A real one-node Slurm cluster on loopback, for the `slurm` test tier (`make test-slurm`).

    install()                  apt-installs Debian's slurm-wlm and munge, only if slurmctld is missing
    cluster = start(directory) munged, slurmctld and slurmd on 127.0.0.1, everything under `directory`
    cluster.env                what a client needs: {"SLURM_CONF": ".../slurm.conf"}; merge it into os.environ
    cluster.run("sbatch", ...) a client command with cluster.env, checked, its stdout returned
    cluster.stop()             cancels the jobs left, then ends the three daemons by their pids

Fixtures (conftest.py imports them): `slurm_cluster`, one cluster per test session, installed and started
on first use; `slurm_env`, the same cluster with its env set in os.environ for one test (for code under
test that runs sbatch itself). They skip the test, with the reason, where Slurm cannot be installed or
started (not root, no apt-get, apt-get failing); WRPO_SLURM_REQUIRED=1 (make test-slurm) fails instead.

Everything is written under `directory`: slurm.conf, cgroup.conf, an empty plugstack.conf, munge/ (a fresh
key, munged's socket, pid, seed and log), state/ (slurmctld's StateSaveLocation), spool/ (slurmd's),
log/ (the daemons' logs and their stdout/stderr). Nothing is written to /etc; the Debian packages' own
postinst does create /etc/munge/munge.key, which this cluster does not use.

The node is called `localhost` (NodeAddr=127.0.0.1), so `scontrol show hostnames $SLURM_JOB_NODELIST`
gives a name every machine resolves; it has the CPUs this process may run on and the machine's memory.
Ports are free ones picked at start, so two clusters (two checkouts' test runs) can run side by side.

Needs root (slurmd starts jobs as their user; munged and the daemons run as root here) and Debian's
packages (22.05 on bookworm). Pitfalls met while building it:
- Every client (sbatch, squeue, scontrol, sinfo, even `--help`) needs SLURM_CONF: without
  /etc/slurm/slurm.conf it falls back to a DNS SRV lookup and dies ("Could not establish a configuration
  source"). Jobs inherit it from sbatch's environment (--export=ALL, the default), so srun inside works.
- munged refuses a socket whose ancestors are not world-executable (pytest's /tmp/pytest-of-root is 0700):
  it runs with --force, which turns that check into a warning; clients are root too, so they still connect.
- Without slurmdbd there is no `sacct`: a job's final state comes from `scontrol show job -o ID`
  (JobState=COMPLETED|FAILED|CANCELLED|..., ExitCode=CODE:SIGNAL), and only for MinJobAge seconds
  after it ends; MinJobAge=3600 here unless start() is told otherwise.
- The scheduler's defaults delay each start by seconds; SchedulerParameters=batch_sched_delay=0,
  sched_min_interval=0 lets a chain of dependent jobs run back to back.
- A job asking for more than the node has (--ntasks 3 on 2 CPUs, --nodes 2) is accepted by default and
  pends for ever (Reason=PartitionConfig, PartitionNodeLimit); EnforcePartLimits=ALL makes sbatch refuse
  it at once instead ("More processors requested than permitted", "Node count specification invalid").
- SelectTypeParameters=CR_CPU: CPUs are the only consumable, so a job without --mem does not take the
  whole node's memory and two one-CPU jobs (an array's tasks) run side by side.
- Slurm 22.05 has no "disabled" cgroup plugin: cgroup.conf names cgroup/v1 with every Constrain* off, and
  ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/none keep
  the daemons away from cgroups altogether.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wrpo.pipeline.local import free_port

PACKAGES = ["slurm-wlm", "munge"]
SBIN = ["/usr/sbin", "/sbin", "/usr/local/sbin"]
NODE = "localhost"
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here (not root, no apt-get, ...): the tier skips with this."""


def which(program: str) -> str | None:
    """`program` on PATH or in the sbin folders, which a non-login root shell may lack on PATH."""
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))


def install(timeout: float = 600) -> bool:
    """Install slurm-wlm and munge with apt-get unless slurmctld is already there; True if it installed.

    Raises SlurmUnavailable when it cannot: not root, no apt-get, or apt-get failing (offline, ...)."""
    if all(which(p) for p in ("slurmctld", "slurmd", "munged", "sbatch")):
        return False
    if os.geteuid() != 0:
        raise SlurmUnavailable("Slurm is not installed and installing it (apt-get install slurm-wlm munge) "
                               "needs root")
    apt = which("apt-get")
    if apt is None:
        raise SlurmUnavailable("Slurm is not installed and there is no apt-get to install slurm-wlm and munge")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "-qq", "update"],
                    [apt, "-qq", "-y", "--no-install-recommends", "install", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(command)} failed ({done.returncode}): "
                                   f"{(done.stderr or done.stdout)[-1500:]}")
    if not which("slurmctld"):
        raise SlurmUnavailable("apt-get installed slurm-wlm but slurmctld is not there")
    return True



def node_cpus() -> int:
    """The CPUs this process may run on (a container's share, not the host's)."""
    return len(os.sched_getaffinity(0))


def node_memory_mb() -> int:
    """The machine's memory in MiB, as slurmd measures it (a larger RealMemory would drain the node)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (a killed pytest leaves no
    daemons behind). prctl(PR_SET_PDEATHSIG, SIGTERM)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class SlurmCluster:
    directory: Path
    conf: Path
    env: dict[str, str]
    node: str
    partition: str
    cpus: int
    memory_mb: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> str:
        """Run a Slurm client (sbatch, squeue, scontrol...) against this cluster; its stdout."""
        done = subprocess.run(list(command), env=self.client_env(), capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
        return done.stdout

    def node_state(self) -> str:
        """sinfo's state of the node: idle, mixed, allocated, down*, ... ('' if slurmctld does not answer)."""
        done = subprocess.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"], env=self.client_env(),
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else ""

    def logs(self, tail: int = 2000) -> str:
        """The end of every log under log/ and munge/, for an error message."""
        parts = []
        for path in sorted([*(self.directory / "log").glob("*"), self.directory / "munge" / "munged.log"]):
            if path.is_file():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def stop(self, timeout: float = 20) -> None:
        """Cancel the jobs still queued or running, then SIGTERM slurmd, slurmctld and munged by pid
        (SIGKILL after `timeout` s). Safe to call twice."""
        alive = {n: p for n, p in self.processes.items() if p.poll() is None}
        if "slurmctld" in alive and "slurmd" in alive:
            try:
                jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=15).split()
                if jobs:
                    self.run("scancel", *jobs, check=False, timeout=15)
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline and self.run("squeue", "-h", "-o", "%i", check=False,
                                                                    timeout=15).strip():
                        time.sleep(0.2)
            except subprocess.TimeoutExpired:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


SLURM_CONF = """\
# Written by tests/slurm_cluster.py: one node on loopback, everything under {d}.
ClusterName=wrpo-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.socket
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MinJobAge={min_job_age}
EnforcePartLimits=ALL
ReturnToService=2
InactiveLimit=0
KillWait=5
Waittime=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""

CGROUP_CONF = """\
# Slurm 22.05 reads cgroup.conf even with proctrack/linuxproc and task/none; it has no "disabled" plugin.
CgroupPlugin=cgroup/v1
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=no
ConstrainSwapSpace=no
"""


def _popen(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)


def start(directory: Path | str, timeout: float = 60, min_job_age: int = 3600) -> SlurmCluster:
    """Write the configuration and a munge key under `directory`, start munged, slurmctld and slurmd, and
    return once sinfo says the node is idle; slurmctld forgets a job `min_job_age` s after it ends. Raises
    SlurmUnavailable if a program is missing or not root, RuntimeError (with the daemons' logs) if the node
    does not come up within `timeout` s."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("a Slurm cluster on loopback needs root (slurmd starts jobs as their user)")
    programs = {p: which(p) for p in ("munged", "slurmctld", "slurmd", "sinfo")}
    if missing := [p for p, path in programs.items() if path is None]:
        raise SlurmUnavailable(f"not installed: {', '.join(missing)} (tests.slurm_cluster.install() installs them)")
    d = Path(directory).resolve()
    munge_dir = d / "munge"
    socket_path = munge_dir / "munge.socket"
    if len(str(socket_path)) > 100:
        raise SlurmUnavailable(f"{socket_path} is too long for a unix socket; start the cluster in a shorter folder")
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    munge_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)  # a folder started before: wait for this munged's socket, not that one's
    key = munge_dir / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    cpus, memory = node_cpus(), node_memory_mb()
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(d=d, node=NODE, partition=PARTITION, cpus=cpus, memory=memory,
                                      ctld_port=free_port(), slurmd_port=free_port(), min_job_age=min_job_age))
    (d / "cgroup.conf").write_text(CGROUP_CONF)
    (d / "plugstack.conf").write_text("")
    cluster = SlurmCluster(directory=d, conf=conf, env={"SLURM_CONF": str(conf)}, node=NODE, partition=PARTITION,
                           cpus=cpus, memory_mb=memory)
    env = cluster.client_env()
    log = d / "log"
    try:
        cluster.processes["munged"] = _popen(
            [programs["munged"], "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
             f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"], env, log / "munged.stdout")
        _wait(lambda: socket_path.exists(), cluster, timeout, "munged's socket")
        cluster.processes["slurmctld"] = _popen([programs["slurmctld"], "-D", "-c", "-i", "-f", str(conf)], env,
                                                log / "slurmctld.stdout")
        cluster.processes["slurmd"] = _popen([programs["slurmd"], "-D", "-N", NODE, "-f", str(conf)], env,
                                             log / "slurmd.stdout")
        _wait(lambda: cluster.node_state() == "idle", cluster, timeout, "sinfo to say the node is idle")
    except BaseException:
        cluster.stop(timeout=5)
        raise
    return cluster


def _wait(ready, cluster: SlurmCluster, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [n for n, p in cluster.processes.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(dead)} exited" if dead else f"no {what} after {timeout:.0f} s"
            raise RuntimeError(f"Slurm cluster in {cluster.directory} did not start: {reason}\n{cluster.logs()}")
        time.sleep(0.2)


def started_or_skipped(directory: Path, **options) -> SlurmCluster:
    """A cluster started in `directory` (start()'s options), installed first if need be; the test skips where
    Slurm cannot run, or fails under WRPO_SLURM_REQUIRED."""
    try:
        install()
        return start(directory, **options)
    except SlurmUnavailable as unavailable:
        if os.environ.get("WRPO_SLURM_REQUIRED"):
            pytest.fail(f"WRPO_SLURM_REQUIRED is set but {unavailable}", pytrace=False)
        pytest.skip(str(unavailable))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node Slurm cluster on loopback for the whole session; skips where it cannot run."""
    cluster = started_or_skipped(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    """The session's cluster, with its env (SLURM_CONF) in os.environ for this test."""
    for name, value in slurm_cluster.env.items():
        monkeypatch.setenv(name, value)
    return slurm_cluster
