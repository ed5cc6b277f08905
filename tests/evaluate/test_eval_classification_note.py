"""The classification report explains ``published_mAUC`` beside ``mAUC``: how many classes had no defined
AUC and why the published formula can go negative where ours reads 1.0."""

import json

from fusionaudio.evaluate import classification as cls
from fusionaudio.evaluate.embeddings import CachedEmbedder

from test_eval_classification import KeywordBackend


def test_published_mauc_is_explained_where_it_differs(tmp_path, capsys):
    # 5 labels in the vocabulary, only dog and rain in the data: 3 classes have no positive example
    (tmp_path / "v.csv").write_text("0,dog\n1,rain\n2,siren\n3,bell\n4,wind\n")
    recs = [{"audio_id": f"{k}.wav", "prediction": p, "output": p} for k, p in enumerate(["dog", "rain", "dog"])]
    (tmp_path / "p.json").write_text(json.dumps(recs))
    embedder = CachedEmbedder(KeywordBackend(["dog", "rain", "siren", "bell", "wind"]), use_cache=False)
    res = cls.evaluate_classification(str(tmp_path / "p.json"), str(tmp_path / "o.json"),
                                      vocabulary=str(tmp_path / "v.csv"), embedder=embedder)
    m = res["metrics"]
    assert m["mAUC"] == 1.0 and m["published_mAUC"] < 0 and m["published_n_undefined_auc"] == 3
    note = res["meta"]["published_metrics"]
    assert "means over all 5 classes" in note and "(3 here) counts AUC -1" in note
    assert note in (tmp_path / "o.md").read_text()  # the Markdown table carries it too
    cls._show(res)
    assert f"note: {note}" in capsys.readouterr().err
