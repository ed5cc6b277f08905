"""Classification evaluator: vocabularies, label parsing, hand-computed metrics, backends, cache."""

import json
from pathlib import Path

import numpy as np
import pytest
from fake_http import JsonServer

from fusionaudio.evaluate import classification as cls
from fusionaudio.evaluate.embeddings import BertMeanBackend, CachedEmbedder, EmbeddingBackend, OpenAIEmbeddingBackend
from fusionaudio.evaluate.records import EvalInputError

REPO = Path(__file__).resolve().parents[2]
LABELS = ["dog", "rain", "siren"]


class KeywordBackend(EmbeddingBackend):
    """One axis per label word (+ a small shared component); counts embedded texts."""

    backend_id = "keyword-test"

    def __init__(self, words=LABELS):
        self.words, self.calls = list(words), 0

    def embed(self, texts):
        self.calls += len(texts)
        out = np.full((len(texts), len(self.words) + 1), 0.0, np.float32)
        out[:, -1] = 0.1
        for i, t in enumerate(texts):
            for j, w in enumerate(self.words):
                out[i, j] = float(w in t.lower())
        return out


def write(path, records):
    path.write_text(json.dumps(records))
    return str(path)


def test_vocabulary_forms(tmp_path):
    (tmp_path / "a.csv").write_text("index,name\n0,dog\n1,water_drops\n")
    (tmp_path / "b.csv").write_text("1,Walk_or_footsteps,/m/07pbtc8\n2,Coin_(dropping),/m/0242l\n")
    assert cls.load_vocabulary(tmp_path / "a.csv") == ["dog", "water_drops"]
    assert cls.load_vocabulary(tmp_path / "b.csv") == ["Walk_or_footsteps", "Coin_(dropping)"]
    esc = cls.load_vocabulary(REPO / "data/eval/vocabulary/ESC50.csv")
    assert len(esc) == 50 and esc[0] == "dog" and esc[-1] == "hand_saw"
    (tmp_path / "dup.csv").write_text("0,dog\n1,Dog\n")
    with pytest.raises(EvalInputError, match="duplicate label"):
        cls.load_vocabulary(tmp_path / "dup.csv")


def test_label_and_prediction_parsing():
    assert cls.parse_labels("Labels: Electric guitar; Guitar; Music") == ["Electric guitar", "Guitar", "Music"]
    assert cls.parse_labels(["a", "b"]) == ["a", "b"]
    assert cls.parse_labels("dog, cat", sep=",") == ["dog", "cat"]
    assert cls.prediction_items("Labels: Dog; Bark") == ["Labels: Dog; Bark"]  # default: the whole answer
    assert cls.prediction_items("Labels: Dog; Bark", pred_format="auto") == ["Dog", "Bark"]
    assert cls.prediction_items("A dog barks; then silence.", pred_format="auto") == ["A dog barks; then silence."]
    assert cls.prediction_items("dog; bark", pred_format="labels") == ["dog", "bark"]


def test_average_precision_by_hand():
    # class 0 ranked: + - +  -> AP = (1/1 + 2/3) / 2 = 5/6 ; class 1 ranked: + + -  -> AP = 1
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6]])
    truth = np.array([[1, 0], [0, 1], [1, 1]])
    assert cls.average_precision(truth[:, 0], scores[:, 0]) == pytest.approx(5 / 6)
    metrics, per_class, confusion = cls.classification_metrics(scores, truth, ["a", "b"], multilabel=True)
    assert metrics["mAP"] == pytest.approx(11 / 12)
    assert metrics["top1_hit"] == pytest.approx(2 / 3)  # top-1 labels a, a, b; item 1 is only b
    assert per_class[0]["AP"] == pytest.approx(5 / 6) and confusion is None
    # tied scores are one threshold (sklearn's convention): + and - tied at the top -> AP = 1/2
    assert cls.average_precision(np.array([1, 0, 0]), np.array([0.5, 0.5, 0.1])) == pytest.approx(0.5)
    assert np.isnan(cls.average_precision(np.array([0, 0]), np.array([0.1, 0.2])))
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 40), rng.integers(0, 5, 40) / 4
    assert cls.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s))
    assert cls.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s))


def test_accuracy_on_four_items(tmp_path):
    recs = [
        {"audio_id": "1", "output": "dog", "prediction": "A dog barks."},
        {"audio_id": "2", "output": "rain", "prediction": "Rain on a roof."},
        {"audio_id": "3", "output": "siren", "prediction": "A police siren."},
        {"audio_id": "4", "output": "siren", "prediction": "A dog howls."},  # wrong: predicted dog
    ]
    (tmp_path / "v.csv").write_text("index,name\n0,dog\n1,rain\n2,siren\n")
    out = tmp_path / "res" / "cls.json"
    res = cls.evaluate_classification(write(tmp_path / "p.json", recs), str(out), vocabulary=str(tmp_path / "v.csv"),
                                      embedder=CachedEmbedder(KeywordBackend(), use_cache=False))
    m = res["metrics"]
    assert m["accuracy"] == pytest.approx(0.75)
    per = {r["label"]: r for r in res["details"]["per_class"]}
    assert per["dog"]["precision"] == pytest.approx(0.5) and per["dog"]["recall"] == 1.0
    assert per["siren"]["recall"] == pytest.approx(0.5) and per["siren"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert res["details"]["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert json.loads(out.read_text())["metrics"]["accuracy"] == pytest.approx(0.75)
    assert "| accuracy | 0.7500 |" in out.with_suffix(".md").read_text()
    assert Path(res["meta"]["confusion_png"]).read_bytes()[:4] == b"\x89PNG"


def test_multilabel_from_data_and_label_lists(tmp_path):
    recs = [
        {"audio_id": "1", "output": "Labels: dog; rain", "prediction": "Labels: dog; rain"},
        {"audio_id": "2", "output": "Labels: siren", "prediction": "Labels: siren"},
        {"audio_id": "3", "output": ["rain"], "prediction": "rain falling"},
    ]
    res = cls.evaluate_classification(write(tmp_path / "p.json", recs), str(tmp_path / "o.json"), pred_format="auto",
                                      embedder=CachedEmbedder(KeywordBackend(), use_cache=False))
    assert res["meta"]["multilabel"] is True and res["meta"]["n_classes"] == 3
    assert res["metrics"]["mAP"] == pytest.approx(1.0) and res["metrics"]["top1_hit"] == 1.0
    assert "confusion_png" not in res["meta"]


def test_bad_inputs_name_file_and_record(tmp_path):
    emb = CachedEmbedder(KeywordBackend(), use_cache=False)
    with pytest.raises(EvalInputError, match="file not found"):
        cls.evaluate_classification(str(tmp_path / "missing.json"), embedder=emb)
    p = write(tmp_path / "p.json", [{"output": "dog", "prediction": "dog"}, {"output": "dog"}])
    with pytest.raises(EvalInputError, match=r"p\.json: record 1: missing field 'prediction'"):
        cls.evaluate_classification(p, embedder=emb)
    (tmp_path / "v.csv").write_text("0,dog\n")
    p = write(tmp_path / "q.json", [{"output": "dog", "prediction": "x"}, {"output": "cat", "prediction": "x"}])
    with pytest.raises(EvalInputError, match=r"q\.json: record 1: label 'cat' is not in the vocabulary"):
        cls.evaluate_classification(p, vocabulary=str(tmp_path / "v.csv"), embedder=emb)


def test_embedding_cache_persists(tmp_path):
    backend = KeywordBackend()
    first = CachedEmbedder(backend, tmp_path).embed(["a dog", "rain", "a dog"])
    assert backend.calls == 2  # deduplicated
    second = CachedEmbedder(backend, tmp_path).embed(["rain", "a dog"])
    assert backend.calls == 2  # served from disk
    np.testing.assert_allclose(second, first[[1, 0]])


def test_default_minilm_backend(tmp_path):
    recs = [{"output": "dog", "prediction": "A dog is barking."},
            {"output": "rain", "prediction": "Heavy rain falls on a tin roof."},
            {"output": "church_bells", "prediction": "Church bells are ringing."},
            {"output": "siren", "prediction": "An ambulance siren wails past."}]
    res = cls.evaluate_classification(write(tmp_path / "p.json", recs), str(tmp_path / "o.json"), vocabulary="ESC50",
                                      embedder="minilm", cache_dir=str(tmp_path))
    assert res["metrics"]["accuracy"] == 1.0 and res["metrics"]["published_acc"] == 1.0
    assert res["meta"]["backend"].startswith("st:")
    assert res["meta"]["comparability"] == "not comparable with published numbers"
    assert "not comparable with published numbers" in (tmp_path / "o.md").read_text()


def test_bert_mean_backend(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sound", "of", "a", "dog"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(cfg).save_pretrained(tmp_path)
    backend = BertMeanBackend(str(tmp_path))
    vecs = backend.embed(["Sound of a dog!", "dog"])
    assert vecs.shape == (2, 16)
    # the padded batch equals the unpadded single-text mean over all tokens (incl. [CLS]/[SEP])
    ids = torch.tensor([[2, 8, 3]])
    with torch.no_grad():
        ref = backend.model(input_ids=ids).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(vecs[1], ref, atol=1e-5)


def test_openai_embedding_backend(tmp_path, monkeypatch):
    calls = []

    def respond(path, headers, body):
        calls.append((path, headers.get("Authorization"), body))
        return 200, {"data": [{"index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(body["input"])]}

    with JsonServer(respond) as server:
        monkeypatch.setenv("FA_TEST_EMBED_KEY", "sk-test")
        backend = OpenAIEmbeddingBackend(server.url, "emb-model", api_key_env="FA_TEST_EMBED_KEY")
        emb = CachedEmbedder(backend, tmp_path)
        np.testing.assert_allclose(emb.embed(["ab", "abcd"]), [[2, 1], [4, 1]])
        emb.embed(["abcd"])
        assert len(calls) == 1
        assert calls[0][0] == "/v1/embeddings" and calls[0][1] == "Bearer sk-test"
        assert calls[0][2] == {"model": "emb-model", "input": ["ab", "abcd"]}


# ------------------------------------------------------------------ the published protocol
def test_reference_stats_by_hand_and_sklearn():
    from fusionaudio.evaluate.cls_stats import reference_stats

    scores = np.array([[0.9, 0.2, 0.1], [0.8, 0.7, 0.3], [0.1, 0.6, 0.2]])
    truth = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])  # class 2 has no positive
    st = reference_stats(scores, truth)
    # class 0: + - + -> AP 5/6, AUC 1/2 ; class 1: AP 1, AUC 1 ; class 2: AP 0 (sklearn), AUC -1 (reference)
    assert st["AP"] == pytest.approx([5 / 6, 1.0, 0.0]) and st["auc"] == pytest.approx([0.5, 1.0, -1.0])
    assert st["mAP"] == pytest.approx(11 / 18) and st["mAUC"] == pytest.approx(1 / 6)
    assert st["acc"] == pytest.approx(1 / 3)  # argmax truth [0, 1, 0] vs argmax scores [0, 0, 1]
    assert np.isnan(reference_stats(scores, truth, undefined_auc="nan")["mAUC"])
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    s, t = rng.random((30, 4)), (rng.random((30, 4)) > 0.6).astype(float)
    st = reference_stats(s, t)
    assert st["mAP"] == pytest.approx(np.mean([sk.average_precision_score(t[:, k], s[:, k]) for k in range(4)]))
    assert st["mAUC"] == pytest.approx(np.mean([sk.roc_auc_score(t[:, k], s[:, k]) for k in range(4)]))
    # our own per-class AP/AUC (defined classes) agree with the reference where both are defined
    ours, _, _ = cls.classification_metrics(s, t, list("abcd"), multilabel=True)
    assert ours["mAP"] == pytest.approx(st["mAP"]) and ours["mAUC"] == pytest.approx(st["mAUC"])


class FixedEmbedder:
    def __init__(self, table):
        self.table = table

    def embed(self, texts):
        return np.array([self.table[t] for t in texts], dtype=np.float32)


def test_aggregation_accu_and_max():
    table = {"sound of a": [1, 0], "sound of b": [0, 1], "sound of x": [-1, 0], "sound of y": [0.6, 0.8]}
    emb = FixedEmbedder(table)
    np.testing.assert_allclose(cls.score_records([["x", "y"]], ["a", "b"], emb, aggregation="accu"), [[-0.4, 0.8]],
                               atol=1e-6)
    np.testing.assert_allclose(cls.score_records([["x", "y"]], ["a", "b"], emb, aggregation="max"), [[0.6, 0.8]],
                               atol=1e-6)
    # the reference's maximum starts at 0: a lone negative similarity scores 0
    np.testing.assert_allclose(cls.score_records([["x"]], ["a", "b"], emb, aggregation="max"), [[0, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        cls.score_records([["x"]], ["a"], emb, aggregation="mean")


def test_label_text_and_reference_splitting():
    assert cls.label_text("car_horn") == "sound of car_horn"  # the reference keeps the underscore
    assert cls.label_text("Car_horn", keep_underscores=False) == "sound of car horn"
    assert cls.prediction_items("Labels: Dog;Bark;  Rain", pred_format="labels") == ["Dog;Bark", "Rain"]
    assert cls.prediction_items("Sounds: a: dog; cat", pred_format="labels") == ["dog", "cat"]


def test_packaged_reference_vocabularies():
    assert cls.packaged_vocabularies() == ["ESC50", "FSD50K", "FSDnoisy18k", "TAU_Urban", "UrbanSound8K"]
    fsd = cls.load_vocabulary("FSD50K")
    assert len(fsd) == 200 and fsd[0] == "Accelerating_and_revving_and_vroom"
    sizes = {n: len(cls.load_vocabulary(n)) for n in ("ESC50", "FSDnoisy18k", "TAU_Urban", "UrbanSound8K")}
    assert sizes == {"ESC50": 50, "FSDnoisy18k": 20, "TAU_Urban": 10, "UrbanSound8K": 10}
    assert "car_horn" in cls.load_vocabulary("UrbanSound8K")
    with pytest.raises(EvalInputError, match="packaged vocabularies: ESC50"):
        cls.load_vocabulary("NoSuchSet")


def test_reference_files_and_comparability(tmp_path):
    recs = [{"audio_id": "1", "output": "dog", "prediction": "dog"},
            {"audio_id": "2", "output": "rain", "prediction": "rain and a dog"},
            {"audio_id": "3", "output": "dog", "prediction": "siren"}]
    (tmp_path / "v.csv").write_text("0,dog\n1,rain\n2,siren\n")
    out = tmp_path / "r" / "esc.cls.json"
    res = cls.evaluate_classification(write(tmp_path / "p.json", recs), str(out), vocabulary=str(tmp_path / "v.csv"),
                                      embedder=CachedEmbedder(KeywordBackend(), use_cache=False))
    folder = tmp_path / "r" / "esc.cls_cla_report"
    pred, truth = np.load(folder / "all_pred.npy"), np.load(folder / "all_truth.npy")
    assert pred.shape == truth.shape == (3, 3)
    np.testing.assert_array_equal(truth, [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    summary = np.loadtxt(folder / "result_summary.csv", delimiter=",")
    m = res["metrics"]
    np.testing.assert_allclose(summary, [m["published_mAP"], m["published_mAUC"], m["published_acc"]])
    assert m["published_mAUC"] < m["mAUC"]  # siren has no positive: -1 in the published mean, left out of ours
    assert res["meta"]["comparability"].startswith("unknown")


def test_bert_cuts_ids_after_special_tokens(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sound", "of", "a", "dog"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32)
    BertModel(cfg).save_pretrained(tmp_path)
    backend = BertMeanBackend(str(tmp_path), max_length=3)
    vec = backend.embed(["sound of a dog", "dog"])
    with torch.no_grad():  # the reference cuts [CLS] sound of a dog [SEP] to its first 3 ids: no [SEP]
        ref = backend.model(input_ids=torch.tensor([[2, 5, 6]])).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(vec[0], ref, atol=1e-5)


def test_eval_cls_script_runs_inference_at_the_original_settings(tmp_path):
    import subprocess

    log = tmp_path / "calls.log"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
    stub.chmod(0o755)
    (tmp_path / "esc.json").write_text("[]")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "JSON_INPUT": str(tmp_path / "esc.json"),
           "WORK": str(tmp_path / "w"), "VOCAB": "ESC50"}
    subprocess.run(["bash", str(REPO / "scripts/eval/eval_cls.sh")], env=env, check=True, capture_output=True)
    infer, score = log.read_text().splitlines()
    assert infer.startswith("-m fusionaudio.infer") and f"--json_output {tmp_path}/w/t-0.01.json" in infer
    for flag in ("--do_sample true", "--temperature 0.01", "--top_p 0.95", "--top_k 300", "--max_new_tokens 1024"):
        assert flag in infer
    assert score.startswith("-m fusionaudio.evaluate.classification")
    assert f"--input {tmp_path}/w/t-0.01.json" in score and "--vocabulary ESC50" in score
