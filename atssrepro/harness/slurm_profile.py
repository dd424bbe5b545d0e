"""Slurm profiles: the sbatch settings of one cluster, ``slurm/<name>.toml`` or any TOML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from atssrepro import schema
from atssrepro.errors import UserError
from atssrepro.schema import at_least
from atssrepro.tomlfile import load_toml

PROFILE_DIR = Path(__file__).resolve().parents[2] / "slurm"


@dataclass(frozen=True)
class SlurmProfile:
    """Where and with what resources the jobs run: the sbatch settings of one cluster."""

    partition: str = ""
    """Empty: the cluster's default partition."""
    account: str = ""
    qos: str = ""
    nodes: Annotated[int, at_least(1)] = 1
    gpus_per_node: Annotated[int, at_least(0)] = 0
    """One training process (task) starts per GPU; without GPUs, one per node."""
    cpu_processes_per_node: Annotated[int, at_least(0)] = 0
    """Without GPUs: how many training processes (DDP over gloo) start per node; 0: one. For
    trying multi-process runs on CPU nodes, as the tests do on the one-node cluster."""
    cpus_per_task: Annotated[int, at_least(1)] = 1
    """CPUs of each training process: its data-loading workers plus one."""
    mem_gb: Annotated[float, at_least(0)] = 0.0
    """Memory per node; 0: the partition's default."""
    time_min: Annotated[int, at_least(1)] = 60
    """Time limit of one job; a longer run is requeued when it reaches it (see ``max_timeouts``)."""
    max_timeouts: Annotated[int, at_least(0)] = 3
    """How many times a run that reaches ``time_min`` is requeued to continue. Preemptions do not count."""
    constraint: str = ""
    """Node features, as sbatch's --constraint (``volta32gb``, ``a100|h100``)."""
    array_parallelism: Annotated[int, at_least(1)] = 64
    """At most this many runs of one submission train at the same time."""
    sbatch: dict[str, Any] = field(default_factory=dict)
    """More sbatch options, without the dashes: ``{ exclude = "node7", mail-type = "END" }``."""
    setup: tuple[str, ...] = ()
    """Shell lines run before each job starts (``module load cuda``)."""

    @property
    def tasks_per_node(self) -> int:
        """Training processes per node: one per GPU, else ``cpu_processes_per_node`` (at least one)."""
        return self.gpus_per_node or max(1, self.cpu_processes_per_node)


def load_profile(name_or_path: str) -> SlurmProfile:
    """The profile ``slurm/<name>.toml``, or the TOML file at ``name_or_path``."""
    path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
        raise UserError(f"Slurm profile {name_or_path!r} is neither a file nor one of {PROFILE_DIR}: {known}")
    profile = schema.read(SlurmProfile, load_toml(path), str(path), noun="config key")
    if profile.gpus_per_node and profile.cpu_processes_per_node:
        raise UserError(f"{path}: cpu_processes_per_node is for nodes without GPUs; with gpus_per_node, leave it out")
    return profile
