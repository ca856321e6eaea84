"""`VOICEFLEET_DECODE_PROCESSES=auto` counts the CPUs a pod may use, not the node's: the cgroup
CPU quota (v2 `cpu.max`, v1 CFS quota) and the scheduler affinity. Each test lays real files
out in a temp folder the way /sys/fs/cgroup and /proc/self/cgroup are laid out on a node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicefleet_runtime.audio_workers import (
    available_cpus,
    cgroup_cpu_quota,
    decode_process_count,
)
from voicefleet_runtime.cpu_budget import decode_processes_for

AFFINITY = len(os.sched_getaffinity(0))


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, Path]:
    """(the cgroup mount, the process's /proc/self/cgroup)"""
    return tmp_path / "sys" / "fs" / "cgroup", tmp_path / "proc" / "self" / "cgroup"


def test_v2_in_its_own_namespace_reads_the_root_cpu_max(node: tuple[Path, Path]) -> None:
    mount, proc = node
    write(mount, "cpu.max", "150000 100000\n")
    write(proc.parent, "cgroup", "0::/\n")
    assert cgroup_cpu_quota(mount, proc) == 1.5
    assert available_cpus(mount, proc) == min(AFFINITY, 2)


def test_v2_without_a_limit_leaves_the_affinity(node: tuple[Path, Path]) -> None:
    mount, proc = node
    write(mount, "cpu.max", "max 100000\n")
    write(proc.parent, "cgroup", "0::/\n")
    assert cgroup_cpu_quota(mount, proc) is None
    assert available_cpus(mount, proc) == AFFINITY


def test_v2_takes_the_tightest_quota_from_the_container_up_to_the_root(
    node: tuple[Path, Path],
) -> None:
    mount, proc = node
    pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
    write(mount, "cpu.max", "max 100000\n")
    write(mount, f"{pod}/cpu.max", "50000 100000\n")  # the pod: half a CPU
    write(mount, f"{pod}/cri-containerd-abc.scope/cpu.max", "400000 100000\n")
    write(proc.parent, "cgroup", f"0::/{pod}/cri-containerd-abc.scope\n")
    assert cgroup_cpu_quota(mount, proc) == 0.5
    assert available_cpus(mount, proc) == 1


def test_v1_reads_the_cfs_quota_of_the_cpu_controller(node: tuple[Path, Path]) -> None:
    mount, proc = node
    write(mount, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(mount, "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    write(mount, "cpu,cpuacct/kubepods/pod1/abc/cpu.cfs_quota_us", "250000\n")
    write(mount, "cpu,cpuacct/kubepods/pod1/abc/cpu.cfs_period_us", "100000\n")
    write(
        proc.parent,
        "cgroup",
        "12:memory:/kubepods/pod1/abc\n4:cpu,cpuacct:/kubepods/pod1/abc\n0::/\n",
    )
    assert cgroup_cpu_quota(mount, proc) == 2.5
    assert available_cpus(mount, proc) == min(AFFINITY, 3)


def test_v1_mounted_at_the_container_root_and_no_quota(node: tuple[Path, Path]) -> None:
    mount, proc = node
    # Docker and older runtimes mount the container's own cgroup at the controller's root,
    # while /proc/self/cgroup still names the host's path.
    write(mount, "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(mount, "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    write(proc.parent, "cgroup", "4:cpu,cpuacct:/docker/0123abcd\n")
    assert cgroup_cpu_quota(mount, proc) is None
    write(mount, "cpu,cpuacct/cpu.cfs_quota_us", "300000\n")
    assert cgroup_cpu_quota(mount, proc) == 3.0


@pytest.mark.parametrize(
    "content", ["", "garbage\n", "0 100000\n", "100000 0\n", "-5 100000\n", "max\n"]
)
def test_what_no_kernel_writes_means_no_quota(node: tuple[Path, Path], content: str) -> None:
    mount, proc = node
    write(mount, "cpu.max", content)
    write(proc.parent, "cgroup", "0::/../../elsewhere\nnonsense\n")
    assert cgroup_cpu_quota(mount, proc) is None
    assert available_cpus(mount, proc) == AFFINITY


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path / "missing-too") is None
    assert available_cpus(tmp_path / "missing", tmp_path / "missing-too") == AFFINITY


def test_the_scheduler_affinity_caps_the_count(node: tuple[Path, Path]) -> None:
    """A process pinned to one CPU (as a static CPU manager policy pins a pod) counts one."""
    mount, proc = node
    write(mount, "cpu.max", "800000 100000\n")
    write(proc.parent, "cgroup", "0::/\n")
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from voicefleet_runtime.audio_workers import available_cpus\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "print(available_cpus(Path(sys.argv[1]), Path(sys.argv[2])))\n"
    )
    pinned = subprocess.run(
        [sys.executable, "-c", script, str(mount), str(proc)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert pinned.stdout.strip() == "1"


def test_auto_starts_processes_for_the_usable_cpus() -> None:
    assert decode_process_count("auto", engine_batches=True) == decode_processes_for(
        available_cpus()
    )
    assert decode_process_count("auto", engine_batches=False) == 0
