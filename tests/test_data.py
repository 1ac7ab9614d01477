import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.data import load_dataset
from evalkit.errors import DatasetError

ROWS = [
    {"id": 1, "text": "a", "label": "x"},
    {"id": 2, "text": "b", "label": "y"},
    {"id": 3, "text": "c", "label": "x"},
]


def test_jsonl_rows_ids_lines_and_limit(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + "\n".join(json.dumps(r) for r in ROWS[1:]) + "\n")
    ds = load_dataset(path)
    assert [r.fields["text"] for r in ds.rows] == ["a", "b", "c"]
    assert [r.id for r in ds.rows] == ["1", "2", "3"]
    assert [r.line for r in ds.rows] == [1, 3, 4]
    assert len(load_dataset(path, limit=2)) == 2


def test_formats_give_identical_rows_and_hash(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    loaded = [load_dataset(tmp_path / name) for name in ("d.jsonl", "d.json", "d.parquet", "saved")]
    assert {ds.content_hash for ds in loaded} == {loaded[0].content_hash}
    assert all([r.fields for r in ds.rows] == ROWS for ds in loaded)


def test_csv_values_are_strings_with_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"hello, world",x\nbye,y\n')
    ds = load_dataset(path)
    assert [r.fields for r in ds.rows] == [{"text": "hello, world", "label": "x"}, {"text": "bye", "label": "y"}]
    assert [r.line for r in ds.rows] == [2, 3]


def test_rows_without_id_get_a_content_hash(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "a"}\n')
    ids = [r.id for r in load_dataset(path).rows]
    assert len(ids[0]) == 16 and ids[0] != ids[1]
    assert ids[2] == ids[0] + "-3"  # an exact duplicate keeps a distinct id


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("d.jsonl", '{"a": 1}\n{"a": 2,}\n', "d.jsonl:2: line is not valid JSON"),
        ("d.jsonl", "", "dataset has no rows"),
        ("d.jsonl", '{"id": 1}\n{"id": 1}\n', "d.jsonl:2: duplicate id 1 (also row 1)"),
        ("d.jsonl", "[1, 2]\n", "d.jsonl:1: a row must be an object of fields, got list"),
        ("d.json", '{"rows": []}', "expected a JSON array of rows, got dict"),
        ("d.csv", "a,b\n1,2,3\n", "d.csv:2: row has more values than the header has columns"),
        ("d.txt", "hello", "unsupported dataset format '.txt'"),
        ("d.parquet", "not parquet", "cannot read Parquet file"),
    ],
)
def test_errors_name_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError) as err:
        load_dataset(path)
    assert expected in str(err.value)
    assert "fix:" in str(err.value) or "unsupported" not in expected


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="dataset does not exist"):
        load_dataset(tmp_path / "nope.jsonl")


def test_saved_dataset_dict_asks_for_a_split(tmp_path):
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)}
    ).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DatasetError, match=r"folder holds several splits \(train, test\)"):
        load_dataset(tmp_path / "dd")


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_arbitrary_bytes_load_or_raise_dataset_error(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    try:
        ds = load_dataset(path)
    except DatasetError:
        return
    assert all(isinstance(r.fields, dict) for r in ds.rows)
