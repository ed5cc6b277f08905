"""One sampling rule for every driver (quick_inference, infer, the API, the web demo, the pipeline).

* ``temperature 0``, ``greedy=True`` or ``do_sample=False`` mean greedy decoding (``temperature`` /
  ``top_p`` / ``top_k`` then do not apply and are dropped);
* otherwise sampling with the family's defaults for what is not given;
* the same validation and the same error text everywhere (:class:`fusionaudio.errors.UsageError`).
"""

from __future__ import annotations

from fusionaudio.errors import UsageError

#: Options a caller may set; anything else is refused by name.
OPTIONS = ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "num_beams", "min_new_tokens",
           "repetition_penalty")
SAMPLING_ONLY = ("temperature", "top_p", "top_k")


def _number(name: str, value, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if kind is int and int(value) != value:
        raise UsageError(f"{name} must be a whole number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"{name} must be finite, got {value!r}")
    return kind(value)


def sampling_options(defaults: dict, greedy: bool = False, **given) -> dict:
    """The effective generation options: ``defaults`` overridden by the ``given`` ones that are not None.

    Returns a dict with ``do_sample`` and, when sampling, ``temperature`` / ``top_p`` / ``top_k``, plus
    ``max_new_tokens``, ``num_beams`` and any of ``min_new_tokens`` / ``repetition_penalty`` that are set.
    """
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown generation option(s): {', '.join(unknown)}")
    opts = {**{k: v for k, v in defaults.items() if k in OPTIONS},
            **{k: v for k, v in given.items() if v is not None}}
    if "temperature" in opts:
        t = _number("temperature", opts["temperature"])
        if t < 0:
            raise UsageError(f"temperature must be >= 0 (0 means greedy), got {t}")
        opts["temperature"] = t
    explicit_greedy = greedy or given.get("do_sample") is False or given.get("temperature") == 0
    do_sample = bool(opts.get("do_sample", True)) and not explicit_greedy and opts.get("temperature", 1.0) != 0
    opts["do_sample"] = do_sample
    if do_sample:
        top_p = _number("top_p", opts.get("top_p", 1.0))
        if not 0 < top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {top_p}")
        top_k = _number("top_k", opts.get("top_k", 0), int)
        if top_k < 0:
            raise UsageError(f"top_k must be >= 0 (0: no top-k filter), got {top_k}")
        opts.update(top_p=top_p, top_k=top_k)
    else:
        for key in SAMPLING_ONLY:
            opts.pop(key, None)
    for key, low in (("max_new_tokens", 1), ("num_beams", 1), ("min_new_tokens", 0)):
        if opts.get(key) is not None:
            opts[key] = _number(key, opts[key], int)
            if opts[key] < low:
                raise UsageError(f"{key} must be >= {low}, got {opts[key]}")
    if opts.get("repetition_penalty") is not None:
        opts["repetition_penalty"] = _number("repetition_penalty", opts["repetition_penalty"])
        if opts["repetition_penalty"] <= 0:
            raise UsageError(f"repetition_penalty must be > 0, got {opts['repetition_penalty']}")
    return {k: v for k, v in opts.items() if v is not None}
