"""Property: a triggered read returns the answer to its own trigger, or an explicit no-read, whatever
came before the trigger (stale lines, a stale line's first half), whatever junk precedes the answer
and however the bytes are cut into segments. The driver runs its real pump against a scripted
in-memory byte stream (the order of bytes and trigger is exact; no timing luck)."""

from __future__ import annotations

from collections.abc import Callable

import gevent
import gevent.queue
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bliss_sampletrack.errors import NoReadError, ReaderTimeout
from bliss_sampletrack.readers.dialects import DataManDialect, Dialect, GenericDialect, KeyenceDialect
from bliss_sampletrack.readers.line_reader import LineReader

DIALECTS = {
    "keyence-cr": KeyenceDialect.framed("cr"),
    "keyence-stx": KeyenceDialect.framed("stx_etx"),
    "dataman": DataManDialect(),
    "generic-stx": GenericDialect(terminator=b"\x03", header=b"\x02", trigger=b"T\r\n"),
}
codes = st.from_regex(r"[A-Z]{2,4}-[0-9]{1,4}", fullmatch=True)
junk_payloads = st.sampled_from([b"\x01\xfe\x7f", b"\xff\xff", b"\x00junk", b"bad\x07bell"])


class ScriptedTransport:
    """Bytes in scripted chunks; what is scripted for "after the trigger" arrives once it is sent."""

    url = "mem://scripted"
    is_open = True

    def __init__(self) -> None:
        self.incoming: gevent.queue.Queue[bytes] = gevent.queue.Queue()
        self.after_trigger: list[bytes] = []
        self.written: list[bytes] = []

    def open(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, data: bytes, timeout: float) -> None:
        self.written.append(data)
        for chunk in self.after_trigger:
            self.incoming.put(chunk)
        self.after_trigger = []

    def read_some(self, timeout: float) -> bytes:
        try:
            return self.incoming.get(timeout=timeout)
        except gevent.queue.Empty:
            raise ReaderTimeout("nothing") from None


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(marks, marks[1:], strict=False) if data[a:b]]


def framed(dialect: Dialect) -> Callable[[bytes], bytes]:
    return lambda text: dialect.header + text + dialect.terminator


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(sorted(DIALECTS)),
    stale=st.lists(st.one_of(codes.map(str.encode), junk_payloads, st.just(b"NOREAD")), max_size=3),
    stale_tail=st.one_of(st.none(), codes.map(str.encode)),
    junk=st.lists(junk_payloads, max_size=3),
    answer=st.one_of(codes, st.just(None)),
    before_cuts=st.lists(st.integers(0, 200), max_size=4),
    after_cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_a_read_returns_its_own_answer_or_an_explicit_no_read(
    family: str,
    stale: list[bytes],
    stale_tail: bytes | None,
    junk: list[bytes],
    answer: str | None,
    before_cuts: list[int],
    after_cuts: list[int],
) -> None:
    dialect = DIALECTS[family]
    frame = framed(dialect)
    no_read = dialect.no_read[0].encode()
    before = b"".join(frame(line) for line in stale)
    after = b""
    if stale_tail is not None:  # a stale answer cut in two by the trigger
        whole = frame(stale_tail)
        before, after = before + whole[: len(whole) // 2], whole[len(whole) // 2 :]
    after += b"".join(frame(line) for line in junk)
    after += frame(answer.encode() if answer is not None else no_read)
    transport = ScriptedTransport()
    reader = LineReader("prop", transport, dialect, timeout=2.0)
    try:
        for chunk in cut(before, before_cuts):
            transport.incoming.put(chunk)
        transport.after_trigger = cut(after, after_cuts)
        reader.connect(2.0)
        with gevent.Timeout(5):
            while not transport.incoming.empty():  # the pump took every byte sent before the trigger
                gevent.sleep(0.001)
            gevent.sleep(0.001)
        if answer is None:
            with pytest.raises(NoReadError):
                reader.read()
        else:
            assert reader.read().barcode == answer
    finally:
        reader.close()
