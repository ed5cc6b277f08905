"""Property-based tests (hypothesis) of record validation: any JSON value in, a verdict per record
out, never an exception; the verdict agrees with the record format stated in fusionaudio.gama.data."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionaudio.gama.data import select_records, validate_records

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
FIELD = st.sampled_from(["audio_id", "instruction", "input", "output", "dataset", "task", "extra"])
# records that are mostly well-formed, with any field possibly missing or of any JSON type
RECORD = st.dictionaries(FIELD, TEXT | st.just("empty") | st.just("") | JSON, max_size=7) | JSON


def expected_ok(rec) -> bool:
    """The format, restated independently of the implementation."""
    if not isinstance(rec, dict):
        return False
    if "audio_id" not in rec or not (rec["audio_id"] is None or isinstance(rec["audio_id"], str)):
        return False
    for key in ("instruction", "output"):
        if not isinstance(rec.get(key), str) or not rec[key].strip():
            return False
    return all(isinstance(rec[k], str) for k in ("input", "dataset", "task") if k in rec)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORD, max_size=8))
def test_every_record_gets_exactly_one_verdict(tmp_path_factory, records):
    report = validate_records(records, tmp_path_factory.getbasetemp(), check_audio=False)
    bad = [b.index for b in report.bad]
    assert sorted(report.ok_indices + bad) == list(range(len(records)))
    assert report.ok_indices == [i for i, r in enumerate(records) if expected_ok(r)]
    for b in report.bad:
        assert b.reason  # every rejection says why


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(RECORD, min_size=1, max_size=6), st.booleans())
def test_files_round_trip_and_skip_bad_keeps_the_good_in_order(tmp_path, records, as_jsonl):
    path = tmp_path / ("d.jsonl" if as_jsonl else "d.json")
    text = "\n".join(json.dumps(r) for r in records) if as_jsonl else json.dumps(records)
    path.write_text(text, encoding="utf-8")
    good = [r for r in records if expected_ok(r)]
    if not good:
        return
    out, report = select_records(path, skip_bad=True, check_audio=False)
    assert [{k: v for k, v in r.items() if k != "input" or "input" in g} for r, g in zip(out, good)] == good
    assert len(report.bad) == len(records) - len(good)
