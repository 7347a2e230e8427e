"""Settings precedence, every UsageError, the header, the doctor, conflicts."""
from __future__ import annotations

import sys

import pytest

SHOW = """
import pytest

def pytest_collection_finish(session):
    from pytest_isolate.plugin import settings_key
    for item in session.items:
        s = item.stash[settings_key]
        print("SETTINGS", item.name, {k: (getattr(s, k).value, getattr(s, k).source)
                                      for k in ("isolated", "memory", "timeout", "cpus", "network")})
"""


def test_precedence_marker_cli_env_ini_default(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(SHOW)
    pytester.makeini("""
        [pytest]
        isolate_memory = 1G
        isolate_timeout = 30
        isolate_cpus = 2
    """)
    pytester.makepyfile("""
        import pytest
        pytestmark = pytest.mark.isolated(timeout=5)

        @pytest.mark.isolated(memory="64M")
        def test_a(): pass

        def test_b(): pass
    """)
    monkeypatch.setenv("PYTEST_ISOLATE_TIMEOUT", "20")
    monkeypatch.setenv("PYTEST_ISOLATE_CPUS", "1.5")
    result = pytester.runpytest_subprocess("-s", "--collect-only", "--isolate-cpus", "0.5", timeout=60)
    result.stdout.fnmatch_lines([
        "SETTINGS test_a {'isolated': (True, 'marker on test_precedence_marker_cli_env_ini_default.py::test_a'), "
        "'memory': (67108864, 'marker on test_precedence_marker_cli_env_ini_default.py::test_a'), "
        "'timeout': (5.0, 'marker on test_precedence_marker_cli_env_ini_default.py::test_a'), "
        "'cpus': (0.5, '--isolate-cpus'), 'network': ('services', 'default')}",
        "SETTINGS test_b {'isolated': (True, 'marker on test_precedence_marker_cli_env_ini_default.py::test_b'), "
        "'memory': (1073741824, 'ini isolate_memory (tox.ini)'), "
        "'timeout': (5.0, 'marker on test_precedence_marker_cli_env_ini_default.py::test_b'), "
        "'cpus': (0.5, '--isolate-cpus'), 'network': ('services', 'default')}",
    ])


def test_env_beats_ini_and_isolate_all_sources(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(SHOW)
    pytester.makeini("[pytest]\nisolate_timeout = 30\nisolate_all = true\n")
    pytester.makepyfile("def test_c(): pass")
    monkeypatch.setenv("PYTEST_ISOLATE_TIMEOUT", "2m")
    result = pytester.runpytest_subprocess("-s", "--collect-only", timeout=60)
    result.stdout.fnmatch_lines(["SETTINGS test_c {'isolated': (True, 'ini isolate_all (tox.ini)'), "
                                 "'memory': (None, 'default'), "
                                 "'timeout': (120.0, 'environment PYTEST_ISOLATE_TIMEOUT'), "
                                 "*"])
    result = pytester.runpytest_subprocess("-s", "--collect-only", "--no-isolate", timeout=60)
    result.stdout.fnmatch_lines(["SETTINGS test_c {'isolated': (False, '--no-isolate'), *"])


BAD_MARKERS = [
    ("memory='12x'", "ERROR: pytest-isolate: invalid memory '12x' from marker on test_m.py::test_b: "
                     "expected a size like 512M or 2G"),
    ("timeout=-1", "ERROR: pytest-isolate: invalid timeout -1 from marker on test_m.py::test_b: "
                   "expected a positive number of seconds"),
    ("cpus='many'", "ERROR: pytest-isolate: invalid cpus 'many' from marker on test_m.py::test_b: "
                    "expected a positive number of CPUs like 0.5 or 2"),
    ("cpu_time='x'", "ERROR: pytest-isolate: invalid cpu-time 'x' from marker on test_m.py::test_b: "
                     "expected a number of seconds like 10, 1.5s or 2m"),
    ("pids=0", "ERROR: pytest-isolate: invalid pids 0 from marker on test_m.py::test_b: "
               "expected a positive whole number"),
    ("network='bridge'", "ERROR: pytest-isolate: invalid network 'bridge' from marker on test_m.py::test_b: "
                         "expected 'services' (the default), 'none' or 'host', or host loopback ports to forward "
                         "like 127.0.0.1:5432, [[]::1]:5432, localhost:6379 or 6379"),
    ("pid='shared'", "ERROR: pytest-isolate: invalid pid 'shared' from marker on test_m.py::test_b: "
                     "expected 'private' or 'host'"),
    ("writable=3", "ERROR: pytest-isolate: invalid writable 3 from marker on test_m.py::test_b: "
                   "expected a path or a list of paths"),
    ("root='maybe'", "ERROR: pytest-isolate: invalid root 'maybe' from marker on test_m.py::test_b: "
                     "expected true or false (1/0, yes/no, on/off)"),
    ("mem='1G'", "ERROR: pytest-isolate: unknown marker argument mem='1G' from marker on test_m.py::test_b; "
                 "known: memory, cpus, cpu_time, timeout, pids, memory_warn, cpu_time_warn, "
                 "timeout_warn, network, pid, writable, root, exclusive"),
    ("'1G'", "ERROR: pytest-isolate: invalid marker arguments ('1G',) from marker on test_m.py::test_b: "
             "@pytest.mark.isolated takes keyword arguments only (memory, cpus, cpu_time, timeout, pids, "
             "memory_warn, cpu_time_warn, timeout_warn, network, pid, writable, root, exclusive)"),
]


@pytest.mark.parametrize("args, message", BAD_MARKERS, ids=[a for a, _ in BAD_MARKERS])
def test_bad_marker_fails_before_any_test_runs(pytester: pytest.Pytester, args: str, message: str) -> None:
    pytester.makepyfile(test_m=f"""
        import pytest
        def test_a():
            print("RAN")
        @pytest.mark.isolated({args})
        def test_b(): pass
    """)
    result = pytester.runpytest_subprocess("-s", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "RAN" not in result.stdout.str()


BAD_SESSION = [
    (["--isolate-memory", "lots"], {}, "",
     "ERROR: pytest-isolate: invalid memory 'lots' from --isolate-memory: expected a size like 512M or 2G"),
    (["--isolate-timeout", "0"], {}, "",
     "ERROR: pytest-isolate: invalid timeout '0' from --isolate-timeout: expected a positive number of seconds"),
    (["--isolate-pids", "1.5"], {}, "",
     "ERROR: pytest-isolate: invalid pids '1.5' from --isolate-pids: expected a positive whole number"),
    (["--isolate-network", "wifi"], {}, "",
     "ERROR: pytest-isolate: invalid network 'wifi' from --isolate-network: expected 'services' (the default), "
     "'none' or 'host', or host loopback ports to forward like 127.0.0.1:5432, [[]::1]:5432, localhost:6379 or 6379"),
    (["--isolate-policy", "lax"], {}, "",
     "ERROR: pytest-isolate: invalid policy 'lax' from --isolate-policy: expected 'warn' or 'strict'"),
    ([], {"PYTEST_ISOLATE_CPU_TIME": "soon"}, "",
     "ERROR: pytest-isolate: invalid cpu-time 'soon' from environment PYTEST_ISOLATE_CPU_TIME: "
     "expected a number of seconds like 10, 1.5s or 2m"),
    ([], {"PYTEST_ISOLATE_ALL": "perhaps"}, "",
     "ERROR: pytest-isolate: invalid all 'perhaps' from environment PYTEST_ISOLATE_ALL: "
     "expected true or false (1/0, yes/no, on/off)"),
    ([], {}, "isolate_cpus = -2",
     "ERROR: pytest-isolate: invalid cpus '-2' from ini isolate_cpus (tox.ini): "
     "expected a positive number of CPUs like 0.5 or 2"),
]


@pytest.mark.parametrize("args, env, ini, message", BAD_SESSION, ids=[m.split("from ")[1].split(":")[0]
                                                                    for *_, m in BAD_SESSION])
def test_bad_cli_env_ini_value_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                args: "list[str]", env: "dict[str, str]", ini: str,
                                                message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess(*args, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


MISSING_WRITABLE = ("no such file or directory: a writable path is bound into the sandbox as it is, so it must "
                    "exist before the first test starts. Create it first (in CI, or in a conftest.py's "
                    "pytest_configure) or drop it from the writable paths")


@pytest.mark.parametrize("where", ["marker", "ini", "environment"])
def test_a_writable_path_that_does_not_exist_is_a_usage_error(pytester: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    missing = pytester.path / "not-there"
    marker = f"@pytest.mark.isolated(writable=[{str(missing)!r}])" if where == "marker" else ""
    if where == "ini":
        pytester.makeini("[pytest]\nisolate_writable =\n    not-there\n")
    if where == "environment":
        monkeypatch.setenv("PYTEST_ISOLATE_WRITABLE", str(missing))
    pytester.makepyfile(test_w=f"""
        import pytest

        def test_a():
            print("RAN")

        {marker}
        def test_b():
            print("RAN")
    """)
    result = pytester.runpytest_subprocess("-s", "--isolate-all", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    source = {"marker": "marker on test_w.py::test_b", "ini": "ini isolate_writable (tox.ini)",
              "environment": "environment PYTEST_ISOLATE_WRITABLE"}[where]
    result.stderr.fnmatch_lines([f"ERROR: pytest-isolate: invalid writable '{missing}' from {source}: "
                                 + MISSING_WRITABLE])
    assert "RAN" not in result.stdout.str()
    # nothing is checked for a run that isolates nothing
    if where != "marker":
        assert pytester.runpytest_subprocess("-s", timeout=60).ret == pytest.ExitCode.OK


def test_ini_writable_paths_are_relative_to_the_ini_file(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                        full_sandbox: None) -> None:
    pytester.makeini("[pytest]\nisolate_writable =\n    out\n")
    (pytester.path / "out").mkdir()
    sub = pytester.mkpydir("tests")
    (sub / "test_w.py").write_text(
        "import pathlib\n\n"
        "def test_writes():\n"
        "    out = pathlib.Path(__file__).resolve().parents[1] / 'out'\n"
        "    (out / 'kept.txt').write_text('persisted')\n")
    monkeypatch.chdir(sub)  # run from a subdirectory of the ini file's
    result = pytester.runpytest_subprocess("--isolate-all", timeout=60)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "out" / "kept.txt").read_text() == "persisted"


def test_markers_and_help_document_everything(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers", timeout=60)
    result.stdout.fnmatch_lines(["@pytest.mark.isolated(memory=None, cpus=None, cpu_time=None, timeout=None, "
                                 "pids=None, network='services', pid='private', writable=(), root=False, "
                                 "exclusive=False, memory_warn=None, cpu_time_warn=None, timeout_warn=None): "
                                 "run this test in a "
                                 "throwaway sandbox*"])
    result = pytester.runpytest_subprocess("--help", timeout=60)
    out = result.stdout.str()
    for flag in ("--isolate-all", "--isolate-memory", "--isolate-cpus", "--isolate-cpu-time", "--isolate-timeout",
                 "--isolate-pids", "--isolate-network", "--isolate-pid", "--isolate-policy", "--isolate-doctor",
                 "--no-isolate",
                 "--isolate-memory-warn", "--isolate-cpu-time-warn", "--isolate-timeout-warn", "--isolate-json",
                 "--isolate-report", "--isolate-compare", "--isolate-fail-on-increase", "--isolate-html",
                 "--isolate-junit-properties", "--isolate-jobs", "--isolate-jobs-memory"):
        assert flag in out, flag
    for ini in ("isolate_all", "isolate_memory", "isolate_cpus", "isolate_cpu_time", "isolate_timeout",
                "isolate_pids", "isolate_network", "isolate_pid", "isolate_policy", "isolate_writable",
                "isolate_root",
                "isolate_memory_warn", "isolate_cpu_time_warn", "isolate_timeout_warn", "isolate_json",
                "isolate_report", "isolate_compare", "isolate_fail_on_increase", "isolate_html",
                "isolate_junit_properties", "isolate_jobs", "isolate_jobs_memory", "isolate_exclusive"):
        assert f"  {ini} " in out, ini
    assert "PYTEST_ISOLATE_MEMORY" in out


FAKE_PROBE = """
import sys
import isolate_runtime
p = sys.modules["isolate_runtime.probe"]  # the package attribute is the function
from isolate_runtime.probe import Capabilities, Layer
from isolate_runtime.spec import LAYERS

def _fake(missing):
    layers = {{}}
    for name in LAYERS:
        if name in missing:
            layers[name] = Layer(name, False, missing[name][0], missing[name][1])
        else:
            layers[name] = Layer(name, True)
    return Capabilities("linux", layers, "none (test)")

_caps = _fake({missing!r})
p.probe = isolate_runtime.probe = lambda *a, **k: _caps
"""


def _header(result: pytest.RunResult) -> "list[str]":
    return [line for line in result.stdout.lines if line.startswith("isolate")]


def test_header_full_isolation(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_PROBE.format(missing={}))
    pytester.makepyfile("""
        import pytest

        def test_a(): pass

        @pytest.mark.isolated
        def test_b(): pass
    """)
    accel = "in use" if _accelerator_in_use() else "not used"
    line = f"isolate: sandbox layers: all 7; cgroups: none; C accelerator: {accel}"
    # one line, after the collection: a marked test is isolated
    result = pytester.runpytest_subprocess(timeout=60)
    result.stdout.fnmatch_lines(["collected 2 items", line])
    assert _header(result) == [line]
    # --isolate-all: at the start, with the rest of the header
    result = pytester.runpytest_subprocess("--isolate-all", timeout=60)
    result.stdout.fnmatch_lines([line, "collected 2 items"])
    assert _header(result) == [line]
    # nothing isolated: no line
    pytester.makepyfile("def test_a(): pass")
    assert _header(pytester.runpytest_subprocess(timeout=60)) == []
    # -v: the details
    result = pytester.runpytest_subprocess("--isolate-all", "-v", timeout=60)
    assert _header(result)[:2] == [line, "isolate: cgroups: none (test)"], _header(result)


def _accelerator_in_use() -> bool:
    from isolate_runtime.probe import accelerator

    return accelerator().in_use


def test_header_missing_layer_under_warn_and_strict_refusal(pytester: pytest.Pytester) -> None:
    missing = {"mount": ("overlayfs refused a mount inside the user namespace (EINVAL)",
                         "use a kernel >= 5.11")}
    pytester.makeconftest(FAKE_PROBE.format(missing=missing))
    pytester.makepyfile("""
        import pytest

        def test_a():
            print("RAN")

        @pytest.mark.isolated
        def test_b():
            print("RAN")
    """)
    result = pytester.runpytest_subprocess("-s", timeout=60)
    line = "isolate: sandbox layers: missing mount, running without them (see --isolate-doctor)"
    assert _header(result) == [line]
    result = pytester.runpytest_subprocess("-v", timeout=60)
    assert _header(result)[:3] == [
        line, "isolate:   mount: overlayfs refused a mount inside the user namespace (EINVAL) (fix: use a kernel "
        ">= 5.11)", "isolate: cgroups: none (test)"], _header(result)
    strict = [
        "ERROR: pytest-isolate: --isolate-policy=strict, but this host lacks isolation layers: mount",
        "  mount: overlayfs refused a mount inside the user namespace (EINVAL) (fix: use a kernel >= 5.11)",
        "Fix the host, or run with --isolate-policy=warn to run with what is available.",
    ]
    # refused after the collection, before any test runs
    result = pytester.runpytest_subprocess("-s", "--isolate-policy=strict", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(strict)
    assert "RAN" not in result.stdout.str()
    # under --isolate-all, at the start
    result = pytester.runpytest_subprocess("--isolate-all", "--isolate-policy=strict", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(strict)
    assert "collected" not in result.stdout.str()
    # nothing isolated: nothing to refuse
    pytester.makepyfile("def test_a(): pass")
    assert pytester.runpytest_subprocess("--isolate-policy=strict", timeout=60).ret == pytest.ExitCode.OK


def test_no_namespaces_fallback_is_announced_once_and_tests_still_run(pytester: pytest.Pytester) -> None:
    reason = "user namespaces are disabled (user.max_user_namespaces = 0)"
    fix = "sudo sysctl -w user.max_user_namespaces=15000"
    missing = {name: (reason if name == "user" else "needs the user namespace", fix)
               for name in ("user", "pid", "mount", "network", "ipc", "uts", "cgroup")}
    pytester.makeconftest(FAKE_PROBE.format(missing=missing))
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.isolated
        def test_a():
            assert os.getpid() != 2

        @pytest.mark.isolated
        def test_b():
            os._exit(3)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    line = "isolate: no namespaces here: isolated tests run in a forked process only (see --isolate-doctor)"
    assert _header(result) == [line]
    verbose = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=60)
    assert _header(verbose)[:3] == [line, f"isolate:   user: {reason} (fix: {fix})",
                                    "isolate:   pid: needs the user namespace (fix: sudo sysctl -w "
                                    "user.max_user_namespaces=15000)"], _header(verbose)
    assert "isolate: writes, processes and network are NOT isolated" in _header(verbose)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["CRASHED: the test process exited with status 3 during call*"])


def test_header_when_disabled_or_debugging(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import os, pytest
        @pytest.mark.isolated
        def test_a():
            assert os.getpid() != 2  # ran in-process
    """)
    result = pytester.runpytest_subprocess("--no-isolate", timeout=60)
    assert _header(result) == ["isolate: off (--no-isolate): isolated tests run in-process"]
    result.assert_outcomes(passed=1)
    for flag in ("--pdb", "--trace"):
        result = pytester.run(sys.executable, "-m", "pytest", flag, timeout=60, stdin=b"c\n")
        assert _header(result) == [f"isolate: {flag} given: isolated tests run in-process (drop it to isolate "
                                   "them)"]
        result.assert_outcomes(passed=1)


def test_doctor_prints_the_table_and_exits(pytester: pytest.Pytester) -> None:
    missing = {"network": ("cannot bring up lo in a new network namespace (EPERM)", "run with network='host'")}
    pytester.makeconftest(FAKE_PROBE.format(missing=missing))
    pytester.makepyfile("def test_a(): raise AssertionError")
    result = pytester.runpytest_subprocess("--isolate-doctor", timeout=60)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "pytest-isolate: isolation layers on this host (linux, euid *)",
        "user     yes",
        "network  no   cannot bring up lo in a new network namespace (EPERM)",
        "             fix: run with network='host'",
        "cgroups  none (test)",
        "missing layers and how to fix them:",
        "  network: cannot bring up lo in a new network namespace (EPERM) (fix: run with network='host')",
    ])
    assert "test_a" not in result.stdout.str()


def test_forked_and_isolated_on_the_same_test_is_refused(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_forked")
    pytester.makepyfile("""
        import pytest
        @pytest.mark.isolated
        @pytest.mark.forked
        def test_both(): pass

        def test_plain(): pass
    """)
    result = pytester.runpytest_subprocess(timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-isolate: test_forked_and_isolated_on_the_same_test_is_refused.py::test_both would be forked "
        "twice: it is isolated (from marker on test_forked_and_isolated_on_the_same_test_is_refused.py::test_both) "
        "and pytest-forked forks it too (@pytest.mark.forked). Use one: drop @pytest.mark.forked, or drop the "
        "isolation (--no-isolate)."])
    pytester.makepyfile("def test_both(): pass")
    result = pytester.runpytest_subprocess("--forked", "--isolate-all", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_both would be forked twice: it is isolated (from --isolate-all) and "
                                 "pytest-forked forks it too (--forked)*"])


def test_pytest_isolated_plugin_is_detected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(pytest_isolated="""
        import pytest
        def pytest_configure(config):
            config.addinivalue_line("markers", "isolated: dyollb's marker")
    """)
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess("-p", "pytest_isolated", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-isolate: the plugin 'pytest_isolated' from pytest-isolated (dyollb) is active and also "
        "claims @pytest.mark.isolated, so both would act on the same tests. Disable one of them: "
        "pytest -p no:pytest_isolated (pytest-isolated) or pytest -p no:isolate (this plugin)."])


def test_foreign_distribution_of_the_same_package_is_detected(pytester: pytest.Pytester) -> None:
    info = pytester.mkdir("pytest_isolate_other-0.0.17.dist-info")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pytest-isolate-other\nVersion: 0.0.17\n")
    # A harmless module of ours as the target, so loading it cannot fail.
    (info / "entry_points.txt").write_text("[pytest11]\npytest_isolate = pytest_isolate.settings\n")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest_subprocess(timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-isolate: the distribution pytest-isolate-other 0.0.17 registers the pytest plugin "
        "'pytest_isolate' from the import package 'pytest_isolate', the same name as this plugin's package "
        "(it is the unrelated PyPI project gilfree/pytest-isolate, with options --isolate and "
        "--isolate-mem-limit). The two overwrite each other's files; uninstall one (pip uninstall "
        "pytest-isolate) and reinstall the one you want."])
