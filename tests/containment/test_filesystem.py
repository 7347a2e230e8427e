"""Hostile tests write, delete and tamper with host files; the host keeps its files."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from .harness import Hostile

REPO = Path(__file__).resolve().parents[2]

#: Host directories outside every writable path of the inner run.
LOCATIONS: Dict[str, Callable[[Hostile], Path]] = {
    "project-tree": lambda case: REPO,
    "inner-rootdir": lambda case: case.project,
    "home": lambda case: Path(os.path.expanduser("~")),
    "etc": lambda case: Path("/etc"),
    "tmp-root": lambda case: Path("/tmp"),
}

WRITE = """
    import os
    import hostile as h

    def test_write_host_paths():
        target = h.env("TARGET")
        h.attempt("write", lambda: open(target, "w").write("escaped"))
        h.attempt("mkdir", os.makedirs, target + ".d/sub")
        h.attempt("file-in-dir", lambda: open(target + ".d/sub/f", "w").write("escaped"))
        h.attempt("symlink", os.symlink, "/etc/hostname", target + ".lnk")
        h.attempt("fifo", os.mkfifo, target + ".fifo")
        # Inside, the write worked: the sandbox is copy-on-write, not read-only.
        with open(target) as f:
            assert f.read() == "escaped"
"""


@pytest.mark.parametrize("where", list(LOCATIONS))
def test_new_files_written_anywhere_vanish(hostile: Hostile, where: str) -> None:
    target = hostile.host_path(LOCATIONS[where](hostile))
    extras = [hostile.host_path(target.parent, suffix) for suffix in (".d", ".lnk", ".fifo")]
    hostile.write(WRITE)
    inner = hostile.run(env={"CONTAINMENT_TARGET": str(target)})
    leaked = [str(p) for p in [target, *extras] if os.path.lexists(p)]
    assert not leaked, f"the sandboxed test created host files: {leaked}; evidence {hostile.all_evidence()}"
    inner.assert_healthy({"test_write_host_paths": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    assert hostile.evidence("write") == "ok"


TAMPER = """
    import os
    import hostile as h

    def test_tamper_with_host_files():
        base = h.env("BASE")
        h.attempt("overwrite", lambda: open(base + "-overwrite", "w").write("tampered"))
        h.attempt("append", lambda: open(base + "-append", "a").write("tampered"))
        h.attempt("truncate", os.truncate, base + "-truncate", 0)
        h.attempt("delete", os.unlink, base + "-delete")
        h.attempt("rename", os.rename, base + "-rename", base + "-renamed")
        h.attempt("chmod", os.chmod, base + "-chmod", 0o777)
        h.attempt("utime", os.utime, base + "-utime", (1, 1))
        h.attempt("hardlink", os.link, base + "-overwrite", base + "-hardlink")
        h.attempt("replace-by-symlink", lambda: (os.unlink(base + "-symlinked"),
                                                 os.symlink("/etc/passwd", base + "-symlinked")))
"""
VICTIMS = ("overwrite", "append", "truncate", "delete", "rename", "chmod", "utime", "symlinked")


def _state(path: Path) -> Tuple[str, int, int, bool]:
    st = os.lstat(path)
    return path.read_text(), stat.S_IMODE(st.st_mode), int(st.st_mtime), stat.S_ISLNK(st.st_mode)


@pytest.mark.parametrize("where", list(LOCATIONS))
def test_existing_host_files_are_not_changed_or_deleted(hostile: Hostile, where: str) -> None:
    directory = LOCATIONS[where](hostile)
    base = hostile.host_path(directory)
    before: Dict[str, Tuple[str, int, int, bool]] = {}
    for name in VICTIMS:
        victim = hostile.host_path(directory, f"-{name}", content=f"original {name}\n")
        os.chmod(victim, 0o640)
        os.utime(victim, (1_000_000_000, 1_000_000_000))
        before[name] = _state(victim)
    strays = [hostile.host_path(directory, s) for s in ("-renamed", "-hardlink")]
    hostile.write(TAMPER)
    inner = hostile.run(env={"CONTAINMENT_BASE": str(base)})
    after = {}
    for name in VICTIMS:
        victim = Path(f"{base}-{name}")
        after[name] = _state(victim) if os.path.lexists(victim) else None
    changed = {k: (before[k], after[k]) for k in VICTIMS if before[k] != after[k]}
    assert not changed, f"host files changed: {changed}; evidence {hostile.all_evidence()}"
    assert not [str(p) for p in strays if os.path.lexists(p)], "the sandboxed test created host files"
    inner.assert_healthy({"test_tamper_with_host_files": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    if where != "tmp-root":  # the private /tmp hides the host's files altogether
        assert hostile.evidence("overwrite") == "ok" and hostile.evidence("delete") == "ok"


BREAKOUT = """
    import os
    import pytest
    import hostile as h

    {mark}
    def test_chroot_and_proc_root_breakouts():
        target = h.env("TARGET")
        name = os.path.basename(target)

        # The classic chroot breakout (needs CAP_SYS_CHROOT: a sandbox
        # asked for with root=True keeps it inside its user namespace).
        def chroot_breakout():
            os.makedirs("/var/tmp/" + h.TAG + "-jail", exist_ok=True)
            real = os.open("/", os.O_RDONLY)
            os.chroot("/var/tmp/" + h.TAG + "-jail")
            os.fchdir(real)
            for _ in range(64):
                os.chdir("..")
            os.chroot(".")
            with open("etc/" + name + "-chroot", "w") as f:
                f.write("escaped")
        h.attempt("chroot", chroot_breakout)
        # Links into other roots (PID 1's root and cwd, our own).
        for link in ("/proc/1/root", "/proc/1/cwd/..", "/proc/self/root", "/proc/thread-self/root"):
            h.attempt("proc" + link.replace("/", "-"),
                      lambda: open(link + "/etc/" + name + "-proc", "w").write("escaped"))
        # A second mount namespace, then pivot back to the saved root.
        h.attempt("unshare-mount", h.unshare, h.CLONE_NEWNS)
        h.attempt("after-unshare", lambda: open("/etc/" + name + "-unshare", "w").write("escaped"))
"""


@pytest.mark.parametrize("root", [False, True], ids=["no-capabilities", "root-true"])
def test_chroot_breakout_and_proc_root_links_stay_inside(hostile: Hostile, root: bool) -> None:
    target = hostile.host_path(Path("/etc"))
    leaks = [hostile.host_path(Path("/etc"), s) for s in ("-chroot", "-proc", "-unshare")]
    jail = Path(f"/var/tmp/{hostile.tag}-jail")
    hostile.on_cleanup(lambda: jail.rmdir() if jail.is_dir() else None)
    hostile.write(BREAKOUT.replace("{mark}", "@pytest.mark.isolated(root=True)" if root else ""))
    inner = hostile.run(env={"CONTAINMENT_TARGET": str(target)})
    leaked = [str(p) for p in leaks if os.path.lexists(p)]
    assert not leaked and not jail.exists(), f"escaped to the host: {leaked}; evidence {hostile.all_evidence()}"
    inner.assert_healthy({"test_chroot_and_proc_root_breakouts": "passed",
                          "test_zz_canary_after_the_hostile_test": "passed"})
    # With root=True the breakouts really ran (inside its user namespace);
    # without, the sandbox's missing capabilities stopped them first.
    want = "ok" if root else "EPERM"
    assert hostile.evidence("chroot") == want and hostile.evidence("unshare-mount") == want, hostile.all_evidence()


LINK_LOOP = """
    import os
    import hostile as h

    def test_plant_links_in_basetemp(tmp_path):
        # pytest resolves every link in basetemp at the session's end
        os.symlink("loopy", tmp_path.parent / "loopy")
        os.symlink("/nonexistent-" + h.TAG, tmp_path.parent / "dangling")
"""


def test_a_link_loop_in_basetemp_does_not_end_the_session_badly(hostile: Hostile) -> None:
    hostile.write(LINK_LOOP)
    inner = hostile.run()
    inner.assert_healthy({"test_plant_links_in_basetemp": "passed",
                          "test_zz_canary_after_the_hostile_test": "passed"})
    assert inner.ret == 0 and "Symlink loop" not in inner.stdout + inner.stderr, inner.describe()
    basetemp = hostile.root / "basetemp"
    left = [name for name in ("loopy", "dangling") if os.path.lexists(basetemp / name)]
    assert not left, f"pytest left the dead links {left} in basetemp"


DEVICES = """
    import os, stat
    import hostile as h

    def test_device_nodes():
        target = h.env("TARGET")
        h.attempt("mknod-block", os.mknod, target + "-blk", stat.S_IFBLK | 0o600, os.makedev(8, 0))
        h.attempt("mknod-char", os.mknod, target + "-mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))
        for dev in ("/dev/mem", "/dev/kmsg", "/dev/sda", "/dev/vda", "/dev/port"):
            h.attempt("open" + dev.replace("/", "-"), lambda: os.close(os.open(dev, os.O_RDONLY)))
"""


def test_device_nodes_cannot_be_created_on_the_host(hostile: Hostile) -> None:
    target = hostile.host_path(REPO)
    nodes = [hostile.host_path(REPO, s) for s in ("-blk", "-mem")]
    hostile.write(DEVICES)
    inner = hostile.run(env={"CONTAINMENT_TARGET": str(target)})
    assert not [str(p) for p in nodes if os.path.lexists(p)], f"device nodes on the host: {hostile.all_evidence()}"
    inner.assert_healthy({"test_device_nodes": "passed", "test_zz_canary_after_the_hostile_test": "passed"})
    ev = hostile.all_evidence()
    assert ev["mknod-block"] != "ok" and ev["open-dev-mem"] != "ok", ev
