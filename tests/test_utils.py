import json

import pytest

from dit_sparse.utils import append_json_record


def test_append_json_record_builds_a_list_and_keeps_it_whole_on_failure(tmp_path):
    path = tmp_path / "runs.json"
    append_json_record(path, {"run": 1})
    append_json_record(path, {"run": 2})
    assert json.loads(path.read_text()) == [{"run": 1}, {"run": 2}]
    with pytest.raises(TypeError):
        append_json_record(path, {"run": object()})
    assert json.loads(path.read_text()) == [{"run": 1}, {"run": 2}]
    assert [p.name for p in tmp_path.iterdir()] == ["runs.json"]
