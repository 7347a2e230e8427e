"""Probe reasons: injected /proc roots and injected step failures give the exact messages."""
from __future__ import annotations

import errno
import importlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from isolate_runtime.probe import probe

probe_mod = importlib.import_module("isolate_runtime.probe")


def _proc(tmp_path: Path, **sysctls: str) -> str:
    root = tmp_path / "proc"
    root.mkdir()
    for rel, value in sysctls.items():
        f = root / "sys" / rel.replace("__", "/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(value + "\n")
    (root / "filesystems").write_text("nodev\ttmpfs\nnodev\toverlay\n")
    return str(root)


def test_user_namespaces_disabled(tmp_path: Path) -> None:
    caps = probe(proc_root=_proc(tmp_path, user__max_user_namespaces="0"), refresh=True)
    user = caps.layers["user"]
    assert not user.available
    assert user.reason == "user namespaces are disabled (user.max_user_namespaces = 0)"
    assert user.fix == "sudo sysctl -w user.max_user_namespaces=15000"
    assert caps.layers["mount"].reason == "needs the user namespace"


def test_apparmor_restriction_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # AppArmor applies to unprivileged callers; on Ubuntu 24.04 the userns is
    # created but writing uid_map fails with EPERM.
    monkeypatch.setattr(probe_mod.os, "geteuid", lambda: 1000)
    root = _proc(tmp_path, kernel__apparmor_restrict_unprivileged_userns="1")
    caps = probe(proc_root=root, inject={"uid_map": errno.EPERM}, refresh=True)
    assert caps.layers["user"].reason == (
        "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)")
    assert caps.layers["user"].fix == "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"


def test_uid_map_eperm(tmp_path: Path) -> None:
    caps = probe(proc_root=_proc(tmp_path), inject={"uid_map": errno.EPERM}, refresh=True)
    assert caps.layers["user"].reason == (
        "writing /proc/self/uid_map was refused (EPERM): the user namespace has no privileges here")
    assert "apparmor_restrict_unprivileged_userns=0" in caps.layers["user"].fix


def test_overlay_refused(tmp_path: Path) -> None:
    caps = probe(proc_root=_proc(tmp_path), inject={"overlay": errno.EINVAL}, refresh=True)
    assert caps.layers["user"].available
    mount = caps.layers["mount"]
    assert not mount.available
    assert mount.reason == "overlayfs refused a mount inside the user namespace (EINVAL)"
    assert mount.fix.startswith("use a kernel >= 5.11")


def test_xino_refused_keeps_the_mount_layer(tmp_path: Path) -> None:
    caps = probe(proc_root=_proc(tmp_path), inject={"xino": errno.EINVAL}, refresh=True)
    assert caps.layers["mount"].available and not caps.overlay_xino
    assert caps.xino_reason == ("overlayfs refused xino=on (EINVAL): a file below a copy-on-write overlay shows the "
                                "device number of the filesystem it came from, not its directory's")
    assert "xino     overlayfs refused xino=on (EINVAL)" in caps.table()


def test_xino_is_tried_for_real(tmp_path: Path) -> None:
    caps = probe(proc_root=_proc(tmp_path), refresh=True)
    if caps.layers["mount"].available:
        # every kernel with unprivileged overlayfs (5.11) knows the option
        assert caps.overlay_xino and not caps.xino_reason, caps.table()
    assert "xino" not in caps.table()


def test_not_linux_is_announced(tmp_path: Path) -> None:
    caps = probe(platform="darwin", refresh=True)
    assert all(not layer.available for layer in caps.layers.values())
    assert caps.layers["pid"].reason == "namespaces exist only on Linux (this is darwin)"


def test_this_host_really_probes() -> None:
    """The trial child runs for real: with nothing injected every layer works here."""
    caps = probe(refresh=True)
    if os.environ.get("PYTEST_ISOLATE_MUST_WORK") == "1":
        assert not caps.missing(), caps.table()
    assert caps.layers["user"].available or caps.layers["user"].reason


def test_cli_probe_prints_the_table() -> None:
    out = subprocess.run([sys.executable, "-m", "isolate_runtime", "probe"], capture_output=True, text=True,
                         timeout=60)
    assert "isolate_runtime probe (linux" in out.stdout
    for layer in ("user", "pid", "mount", "network", "ipc", "uts", "cgroup", "cgroups"):
        assert f"\n{layer}" in out.stdout or out.stdout.startswith(layer)


def test_cli_run_is_the_same_sandbox(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "isolate_runtime", "run", "--", "sh", "-c",
         "echo $$; hostname; touch /etc/isolate-cli-test 2>/dev/null; exit 7"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 7, out.stderr
    pid, host = out.stdout.split()
    assert pid == "2" and host == socket.gethostname()
    assert not Path("/etc/isolate-cli-test").exists()
