"""Model-independent evaluation suite.

Modules (each has a CLI: ``python -m fusionaudio.evaluate.<name> --help``):

* ``classification`` -- embedding-similarity classification (accuracy / mAP, per-class report,
  confusion matrix), as in the reference's ``eval_Cls.py``;
* ``captioning`` -- BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (+ SPICE/SPIDEr when available);
* ``qa`` -- multiple choice (rule + LLM alignment, or every answer to the judge), graded 0-5 judge,
  pairwise chat judge (``qa_judged``), yes/no; judge prompts are template files (``judge_prompts``);
* ``mmau`` -- MMAU as AudSemThinker evaluates it (prompt, ``string_match``, breakdowns);
* ``cls_stats`` / ``captioning_ltu`` -- the published classification statistics and LTU captioning;
* ``retrieval`` -- text-to-audio / audio-to-text R@1/5/10 and mAP@10 with a dual encoder;
* ``report`` -- JSON + Markdown per evaluation, ``gather`` for several.

Field conventions: every evaluator reads the model answer from ``prediction`` and the
ground truth from ``output`` (``--pred_key`` / ``--ref_key`` override both).
"""

from fusionaudio.evaluate.records import DEFAULT_PRED_KEY, DEFAULT_REF_KEY, EvalInputError, load_records

__all__ = ["DEFAULT_PRED_KEY", "DEFAULT_REF_KEY", "EvalInputError", "load_records"]
