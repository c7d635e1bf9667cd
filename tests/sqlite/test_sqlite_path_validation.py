"""A path the file system cannot encode is refused when the backend is made, as one holding NUL is.

``os.fsencode`` turns a path into the bytes the OS opens: a surrogate from
U+DC80 to U+DCFF stands for one byte that is not UTF-8 (what ``os.fsdecode``
and ``os.listdir`` give for such a name) and works; any other lone surrogate
cannot be encoded, and the first enqueue raised a bare ``UnicodeEncodeError``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sitq
from sitq import SQLiteBackend, ValidationError

import sitq_test_tasks as tasks


@pytest.mark.parametrize("name", ["\ud800.db", "a\udfff.db", "\udc7f.db"])
def test_a_path_with_a_surrogate_that_is_no_byte_is_refused(tmp_path: Path, name: str) -> None:
    for path in (f"{tmp_path}/{name}", tmp_path / name):
        with pytest.raises(ValidationError) as info:
            SQLiteBackend(path)
        assert info.value.parameter == "path" and "file system" in info.value.message
    with pytest.raises(ValidationError) as info:
        sitq.connect({"backend": "sqlite", "path": f"{tmp_path}/{name}"})
    assert info.value.parameter == "path"
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("name", ["\udcff.db", "a\udc80b.db"])
def test_a_path_decoded_with_surrogateescape_still_works(tmp_path: Path, name: str) -> None:
    with sitq.SyncTaskQueue(SQLiteBackend(f"{tmp_path}/{name}")) as queue:
        queue.enqueue(tasks.add, 1, 2)
        assert queue.counts()["queued"] == 1
    assert os.listdir(os.fsencode(tmp_path)) == [os.fsencode(name)]
