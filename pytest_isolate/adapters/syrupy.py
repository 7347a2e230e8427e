"""syrupy: the snapshot assertions a test made, carried back from its sandbox.

syrupy's session records every snapshot assertion while the tests run; at
the session's end it writes what ``--snapshot-update`` asked for, reports,
and finds the snapshots no test used (and deletes them under
``--snapshot-update``).  An isolated test's assertions were recorded in the
sandbox's copy of that session: the pytest process saw none, reported every
committed snapshot unused, and ``--snapshot-update`` deleted them.

The sandbox sends, per assertion the test made, its extension class (module
and qualified name) and per execution its index, whether it created,
updated or matched the snapshot, and the serialized snapshot when one is to
be written.  The pytest process makes its own assertion for the item (as the
``snapshot`` fixture would, registered with syrupy's session), with the
sandbox's results; each snapshot's file and name are computed here from the
item and the index.  Under ``--snapshot-update`` (or
``--snapshot-update-new`` for a new one) the snapshot is queued for
writing, and syrupy writes it at the session's end with its own code;
not when its file lies in a path any sandbox of the session may write
(syrupy would follow a link planted there): the test then gets a warning
saying so, and the snapshot counts as failed.

syrupy's internals used (stable from syrupy 4.9 to 7): ``config._syrupy``
(the session), ``SnapshotSession._assertions``, and an assertion's
``_execution_results``, ``_execution_name_index`` and ``_executions``.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any, Dict, List, Optional, Union

import pytest

from .. import checks
from . import Adapter as Base
from .paths import sandbox_writable, writable_root

NOT_WRITTEN = ("pytest-isolate: the snapshot {path} was not written: it lies in {root}, which isolated tests may "
               "write, and pytest would follow a link a test planted there. Keep snapshots out of writable paths, "
               "or update them without isolation (--no-isolate).")

#: Bounds on what one test may send back (all of it is within
#: --isolate-message-limit, too).
MOST_ASSERTIONS = 10_000
MOST_EXECUTIONS = 100_000
MOST_INDEX_CHARACTERS = 1_000

Index = Union[int, str]


def _session(item: pytest.Item) -> Any:
    return getattr(item.config, "_syrupy", None)


def _index_of(assertion: Any, number: int, result: Any) -> Optional[Index]:
    """The index (the execution's number, or the name given with
    ``snapshot(name=...)``) an execution of ``assertion`` used: the one
    whose snapshot name is the result's."""
    candidates: List[Index] = [number]
    candidates += [k for k in getattr(assertion, "_execution_name_index", {}) if isinstance(k, str)]
    for index in candidates:
        name = assertion.extension.get_snapshot_name(test_location=assertion.test_location, index=index)
        if name == result.snapshot_name:
            return index
    return None


def _encode(data: Any) -> Optional[Dict[str, str]]:
    if isinstance(data, str):
        return {"text": data}
    if isinstance(data, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(data)).decode("ascii")}
    return None


def _decode(value: Any, what: str) -> Union[str, bytes]:
    d = checks.mapping(value, what)
    if set(d) == {"text"}:
        return checks.string(d["text"], what)
    if set(d) == {"base64"}:
        try:
            return base64.b64decode(checks.string(d["base64"], what), validate=True)
        except (binascii.Error, ValueError):
            raise checks.fail(f"{what} is not base64") from None
    raise checks.fail(f"{what} is neither text nor base64")


def _extension_class(module: str, qualname: str) -> type:
    """The syrupy extension class named, among the extension classes that
    exist (never imported or looked up by the name's parts)."""
    from syrupy.extensions.base import AbstractSyrupyExtension

    cls = checks.subclass_named(AbstractSyrupyExtension, module, qualname)
    if cls is None:
        raise checks.fail(f"a snapshot extension {module}.{qualname} that is not loaded here")
    return cls


def _fields(cls: Any, **values: Any) -> Dict[str, Any]:
    """The keyword arguments of ``values`` that the dataclass ``cls`` of this
    syrupy version takes."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in values.items() if k in names}


class Adapter(Base):
    name = "syrupy"

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        self.start_at = 0

    def start(self, item: pytest.Item) -> None:
        session = _session(item)
        self.start_at = len(session._assertions) if session is not None else 0

    def collect(self, item: pytest.Item) -> Optional[Any]:
        session = _session(item)
        if session is None:
            return None
        assertions = []
        for assertion in session._assertions[self.start_at:]:
            executions = []
            for number, result in sorted(assertion.executions.items()):
                index = _index_of(assertion, number, result)
                if index is None:  # pragma: no cover - a name no index gives: not carried back
                    continue
                execution: Dict[str, Any] = {"index": index, "created": bool(result.created),
                                             "updated": bool(result.updated), "success": bool(result.success)}
                if result.created or result.updated:
                    execution["data"] = _encode(result.asserted_data)
                executions.append(execution)
            cls = type(assertion.extension)
            assertions.append({"extension": [cls.__module__, cls.__qualname__], "executions": executions})
        return {"assertions": assertions} if assertions else None

    def merge(self, item: pytest.Item, data: Any) -> None:
        from syrupy.assertion import AssertionResult, SnapshotAssertion
        from syrupy.location import PyTestLocation

        session = _session(item)
        if session is None:
            raise checks.fail("snapshot assertions, but syrupy's session is not running here")
        option = item.config.option
        update, new_only = bool(option.update_snapshots), bool(getattr(option, "update_new_snapshots_only", False))
        assertions = checks.listing(checks.mapping(data, "syrupy data").get("assertions"), "snapshot assertions",
                                    most=MOST_ASSERTIONS)
        location = PyTestLocation(item)
        for sent in assertions:
            sent = checks.mapping(sent, "a snapshot assertion")
            named = checks.strings(sent.get("extension"), "a snapshot extension")
            if len(named) != 2:
                raise checks.fail("a snapshot extension that is not (module, name)")
            module, qualname = named
            executions = checks.listing(sent.get("executions"), "snapshot executions", most=MOST_EXECUTIONS)
            assertion: Any = SnapshotAssertion(**_fields(
                SnapshotAssertion, session=session, extension_class=_extension_class(module, qualname),
                test_location=location, update_snapshots=update, update_new_snapshots_only=new_only))
            extension = assertion.extension
            for number, execution in enumerate(executions):
                execution = checks.mapping(execution, "a snapshot execution")
                index: Index = execution.get("index")  # type: ignore[assignment]
                if isinstance(index, str):
                    checks.string(index, "a snapshot's name", most=MOST_INDEX_CHARACTERS)
                else:
                    checks.integer(index, "a snapshot's index", least=0)
                created = checks.boolean(execution.get("created"), "a snapshot's created")
                updated = checks.boolean(execution.get("updated"), "a snapshot's updated")
                success = checks.boolean(execution.get("success"), "a snapshot's success")
                written: Union[str, bytes, None] = None
                snapshot_location = extension.get_location(test_location=location, index=index)
                if created or updated:
                    if not (update or (new_only and created)):
                        raise checks.fail("a snapshot written though --snapshot-update is not given")
                    written = _decode(execution.get("data"), "a snapshot's data")
                    root = writable_root(snapshot_location, sandbox_writable(item))
                    if root is not None:
                        # syrupy, in this process, would follow a link a
                        # sandbox planted there (or wait on a FIFO)
                        item.warn(pytest.PytestWarning(NOT_WRITTEN.format(path=snapshot_location, root=root)))
                        written, created, updated, success = None, False, False, False
                assertion._execution_results[number] = AssertionResult(**_fields(
                    AssertionResult, snapshot_location=snapshot_location,
                    snapshot_name=extension.get_snapshot_name(test_location=location, index=index),
                    asserted_data=written, recalled_data=None, created=created, updated=updated, success=success,
                    exception=None, test_location=location))
                assertion._execution_name_index[index] = number
                if written is not None:
                    session.queue_snapshot_write(extension=extension, test_location=location, data=written,
                                                 index=index)
            assertion._executions = len(executions)
