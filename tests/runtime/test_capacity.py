"""capacity: the CPUs and memory this process may use, on described hosts."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from isolate_runtime import Figure, capacity


def _host(tmp_path: Path, mounts: Dict[str, str], cgroup: str, files: Dict[str, str],
          meminfo_kib: int = 8 << 20) -> str:
    """A /proc (mountinfo, cgroup, meminfo) and cgroup trees below tmp_path;
    ``mounts``: mount point (relative) -> 'cgroup2' or a v1 controller."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    lines = []
    for n, (point, what) in enumerate(mounts.items()):
        path = tmp_path / point
        path.mkdir(parents=True, exist_ok=True)
        if what == "cgroup2":
            lines.append(f"{30 + n} 25 0:{40 + n} / {path} rw,relatime shared:9 - cgroup2 cgroup2 rw")
        else:
            lines.append(f"{30 + n} 25 0:{40 + n} / {path} rw,relatime shared:9 - cgroup cgroup rw,{what}")
    (proc / "self" / "mountinfo").write_text("\n".join(lines) + "\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "meminfo").write_text(f"MemTotal: 16000000 kB\nMemAvailable: {meminfo_kib} kB\n")
    for rel, text in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return str(proc)


def test_no_limits_anywhere(tmp_path: Path) -> None:
    proc = _host(tmp_path, {"cg": "cgroup2"}, "0::/user/pytest\n",
                 {"cg/user/pytest/cpu.max": "max 100000\n", "cg/user/pytest/memory.max": "max\n"})
    assert capacity.available_cpus(proc, affinity=4) == Figure(4.0, "affinity: 4 CPUs")
    mem = capacity.available_memory(proc)
    assert (mem.value, mem.source) == (float(8 << 30), "MemAvailable (/proc/meminfo)")


def test_cgroup_v2_quota_and_limit_of_an_ancestor(tmp_path: Path) -> None:
    proc = _host(tmp_path, {"cg": "cgroup2"}, "0::/ci/job\n", {
        "cg/ci/job/cpu.max": "max 100000\n",
        "cg/ci/cpu.max": "150000 100000\n",  # the runner's budget: 1.5 CPUs
        "cg/ci/job/memory.max": "max\n",
        "cg/ci/memory.max": str(2 << 30) + "\n",
        "cg/ci/memory.current": str(1 << 30) + "\n",
        "cg/ci/memory.stat": "anon 123\ninactive_file " + str(256 << 20) + "\n",
    })
    got = capacity.available_cpus(proc, affinity=8)
    assert got.value == 1.5
    assert got.source == f"cgroup CPU quota: 1.5 CPUs ({tmp_path}/cg/ci/cpu.max)"
    mem = capacity.available_memory(proc)
    # 2 GiB limit, 1 GiB used of which 256 MiB is reclaimable page cache
    assert mem.value == float((2 << 30) - (1 << 30) + (256 << 20))
    assert mem.source == f"cgroup memory limit less usage ({tmp_path}/cg/ci/memory.max)"


def test_cgroup_v1_hierarchies(tmp_path: Path) -> None:
    proc = _host(tmp_path, {"cpu": "cpu", "memory": "memory"},
                 "4:memory:/docker/abc\n2:cpu:/docker/abc\n0::/\n", {
                     "cpu/docker/abc/cpu.cfs_quota_us": "-1\n",
                     "cpu/docker/abc/cpu.cfs_period_us": "100000\n",
                     "cpu/docker/cpu.cfs_quota_us": "50000\n",
                     "cpu/docker/cpu.cfs_period_us": "100000\n",
                     "memory/docker/abc/memory.limit_in_bytes": str(512 << 20) + "\n",
                     "memory/docker/abc/memory.usage_in_bytes": str(100 << 20) + "\n",
                     "memory/docker/abc/memory.stat": "total_inactive_file 0\n",
                     "memory/memory.limit_in_bytes": "9223372036854771712\n",  # the root: no limit
                     "memory/memory.usage_in_bytes": "1\n",
                 })
    got = capacity.available_cpus(proc, affinity=2)
    assert got.value == 0.5 and "cpu.cfs_quota_us" in got.source
    assert capacity.available_memory(proc).value == float(412 << 20)


def test_the_lowest_wins_and_unreadable_files_are_no_limit(tmp_path: Path) -> None:
    proc = _host(tmp_path, {"cg": "cgroup2"}, "0::/a/b\n", {
        "cg/a/b/cpu.max": "garbage\n",
        "cg/a/cpu.max": "300000 100000\n",  # 3 CPUs: more than the affinity allows
        "cg/a/b/memory.max": str(1 << 30) + "\n",  # memory.current missing: not judged
    }, meminfo_kib=1 << 20)
    assert capacity.available_cpus(proc, affinity=2).value == 2.0
    assert capacity.available_memory(proc).value == float(1 << 30)  # MemAvailable, 1 GiB


def test_this_host_answers() -> None:
    got = capacity.available_cpus()
    assert got.value is not None and got.value >= 1 and got.source
    mem = capacity.available_memory()
    assert mem.value is not None and mem.value > 0
