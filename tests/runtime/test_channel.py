"""The result channel is parsed as hostile input (no kernel needed)."""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Iterator, List, Tuple

import pytest
from isolate_runtime import channel as ch


@pytest.fixture
def pipe() -> Iterator[Tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def _read_all(reader: ch.FrameReader) -> List[Tuple[int, Any]]:
    return reader.read_available()


def test_plain_data_round_trips(pipe: Tuple[int, int]) -> None:
    r, w = pipe
    value = {"a": [1, 2.5, None, True, "é\u2603"], "b": {"c": []}}
    os.write(w, ch.encode(ch.MESSAGE, value) + ch.encode(ch.RESULT, (1, 2)))
    got = _read_all(ch.FrameReader(r))
    assert got == [(ch.MESSAGE, value), (ch.RESULT, [1, 2])]


@pytest.mark.parametrize("body,reason", [
    (b"\xff\xfe", "not UTF-8"),
    (b"{'a': 1}", "not JSON"),
    (b"[1] [2]", "data after its JSON value"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[" * (ch.MAX_DEPTH + 1) + b"]" * (ch.MAX_DEPTH + 1), f"nested more than {ch.MAX_DEPTH} deep"),
    (b'{"a": ' * (ch.MAX_DEPTH + 1) + b"1" + b"}" * (ch.MAX_DEPTH + 1), f"nested more than {ch.MAX_DEPTH} deep"),
    (b"1" * 100_000, "not JSON"),
    (b"[" + b"[]," * (ch.MAX_VALUES + 1) + b"[]]", "more than"),
], ids=["utf8", "json", "trailing", "deep", "deeper-than-the-bound", "objects-deeper-than-the-bound", "long-int",
        "values"])
def test_what_is_not_bounded_plain_json_is_refused(pipe: Tuple[int, int], body: bytes, reason: str) -> None:
    r, w = pipe
    data = _frame(ch.MESSAGE, body)
    reader = ch.FrameReader(r, limit=ch.frame_cost(len(data)) + 10)
    # (written from a thread-free loop: the pipe may hold less than the frame)
    view = memoryview(data)
    with pytest.raises(ch.ProtocolViolation, match=reason):
        while True:
            if view:
                try:
                    n = os.write(w, view[:65536])
                    view = view[n:]
                except BlockingIOError:  # pragma: no cover
                    pass
            reader.read_available()


def test_nesting_up_to_the_bound_and_brackets_in_strings_are_taken() -> None:
    deep: object = 1
    for _ in range(ch.MAX_DEPTH):
        deep = [deep]
    assert ch.decode(json.dumps(deep).encode()) == deep
    text = {"s": "[" * 500, "t": [{"u": "{" * 500}]}
    assert ch.decode(json.dumps(text).encode()) == text


def test_a_string_full_of_commas_is_not_mistaken_for_many_values() -> None:
    text = json.dumps({"out": "," * (ch.MAX_VALUES * 2)}).encode()
    assert ch.decode(text) == {"out": "," * (ch.MAX_VALUES * 2)}


@pytest.mark.parametrize("strings", [
    ["\\\"" * 1000 + "," * 1000] * 300,   # escaped quotes before the commas: still one string each
    ["\\" * 7 + '"' + ",[{" * 500] * 300,  # an odd run of backslashes escapes the quote after it
    [{"k,[{": "v\\" + ",{" * 400}] * 300,  # keys are strings too
])
def test_counting_values_sees_strings_as_a_parser_does(strings: Any) -> None:
    text = json.dumps(strings).encode()
    # the cheap bound is too high: the strings are taken out
    assert text.count(b",") + text.count(b"[") + text.count(b"{") > ch.MAX_VALUES
    assert ch.decode(text) == strings


def test_too_many_strings_are_refused_without_finding_each() -> None:
    text = json.dumps([""] * (ch.MAX_VALUES + 1)).encode()
    with pytest.raises(ch.ProtocolViolation, match="more than 200000 values"):
        ch.decode(text)


def test_lone_surrogates_are_replaced() -> None:
    assert ch.decode(b'"a\\ud800b"') == "a\ufffdb"
    # and the sandbox side can send one (a file name decoded with surrogateescape)
    frame = ch.encode(ch.MESSAGE, "x\udcff")
    assert ch.decode(frame[5:]) == "x\ufffd"


def test_a_frame_past_the_budget_is_refused_before_its_body(pipe: Tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, struct.pack(">IB", 1 << 30, ch.MESSAGE) + b"[")
    reader = ch.FrameReader(r, limit=1 << 20)
    with pytest.raises(ch.OverLimit, match="more than its limit of 1 MiB"):
        reader.read_available()
    assert len(reader._buf) < 100


def test_the_budget_counts_every_frame(pipe: Tuple[int, int]) -> None:
    r, w = pipe
    reader = ch.FrameReader(r, limit=5000)
    one = ch.encode(ch.MESSAGE, "x" * 1000)
    for _ in range(4):
        os.write(w, one)
        reader.read_available()
    os.write(w, one)
    with pytest.raises(ch.OverLimit):
        reader.read_available()


@pytest.mark.parametrize("data,reason", [
    (struct.pack(">IB", 0, ch.MESSAGE), "length 0"),
    (_frame(ord("Z"), b"1"), "unknown kind"),
    (_frame(ch.MESSAGE, b"1")[:-1] + b"", None),
])
def test_broken_frames(pipe: Tuple[int, int], data: bytes, reason: Any) -> None:
    r, w = pipe
    os.write(w, data)
    os.close(w)
    reader = ch.FrameReader(r)
    if reason is not None:
        with pytest.raises(ch.ProtocolViolation, match=reason):
            reader.read_available()
        return
    assert reader.read_available() == []
    with pytest.raises(ch.ProtocolViolation, match="truncated frame"):
        reader.finish()


def test_the_sandbox_side_sends_only_plain_data_within_its_limit(pipe: Tuple[int, int]) -> None:
    r, w = pipe
    ch.set_write_fd(w, limit=4096)
    try:
        with pytest.raises(TypeError, match="only plain data crosses the sandbox boundary"):
            ch.send_message(object())
        ch.send_message("ok")
        with pytest.raises(ValueError, match=r"a message of 5007 bytes would take the sandbox past its limit of "
                                             r"4 KiB \(1024 bytes counted so far\)"):
            ch.send_message("y" * 5000)
    finally:
        ch.set_write_fd(None)
    assert ch.FrameReader(r).read_available() == [(ch.MESSAGE, "ok")]


def test_every_frame_counts_at_least_1_kib(pipe: Tuple[int, int]) -> None:
    """What the caller makes of a frame costs it more than the frame's bytes
    (a warning object and its report for 90 bytes): short frames are counted
    as 1 KiB, on both sides."""
    r, w = pipe
    ch.set_write_fd(w, limit=4 * ch.FRAME_FLOOR)
    try:
        for i in range(4):
            ch.send_message(i)
        with pytest.raises(ValueError, match=r"a message of 6 bytes \(counted as 1024: each message counts at "
                                             r"least 1 KiB\) would take the sandbox past its limit of 4 KiB "
                                             r"\(4096 bytes counted so far\)"):
            ch.send_message(4)
    finally:
        ch.set_write_fd(None)
    assert len(ch.FrameReader(r).read_available()) == 4
    for i in range(6):  # a sandbox that does not ask its own side: the caller counts the same
        os.write(w, ch.encode(ch.MESSAGE, i))
    reader = ch.FrameReader(r, limit=5 * ch.FRAME_FLOOR)
    with pytest.raises(ch.OverLimit, match="more than its limit of 5 KiB"):
        reader.read_available()


def test_a_write_that_writes_nothing_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ch, "_os_write", lambda fd, data: 0)
    with pytest.raises(OSError, match="wrote 0 bytes"):
        ch.write_frame(1, b"abc")
