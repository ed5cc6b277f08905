"""Parse a synthetic scene's caption back into attributes and score it against the scene.

:func:`parse_caption` reads the event phrases of a caption (the synonyms of
:mod:`fusionaudio.demo.scenes`'s captions and a few more); :func:`attribute_accuracy` aligns them
with the scene's events by type, in order (:func:`align_events`), and scores each attribute.
"""

from __future__ import annotations

import difflib
import re

_WORDNUM = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "single": 1, "a single": 1}
_ATTRS = ("variant", "pitch", "loudness", "length", "n_clicks")


def _to_int(word: str) -> int:
    return int(word) if word.isdigit() else _WORDNUM[word]


def _first(s: str, table: list[tuple[str, str]]):
    """Value of the earliest-occurring pattern in ``s`` (None if none match)."""
    hits = [(m.start(), v) for pat, v in table for m in [re.search(pat, s)] if m]
    return min(hits)[1] if hits else None


def _parse_phrase(s: str) -> dict | None:
    s = s.lower()
    typ = _first(s, [(r"\bclick", "clicks"), (r"\b(chirp|sweep|glide)", "chirp"),
                     (r"\b(noise|hiss|rumble|static)", "noise"), (r"\b(tone|beep|hum)", "tone")])
    if typ is None:
        return None
    ev = {"type": typ, "variant": None, "pitch": None, "n_clicks": None,
          "loudness": _first(s, [(r"\b(loud|strong)\b", "loud"), (r"\b(quiet|soft|faint|weak)\b", "quiet")]),
          "length": _first(s, [(r"\b(short|brief)\b", "short"), (r"\b(long|sustained|lengthy)\b", "long")])}
    nopass = re.sub(r"low-?pass(ed)?", "", s)
    ev["pitch"] = _first(nopass, [(r"\b(low|deep)\b", "low"), (r"\b(mid|medium|middle)\b", "mid"),
                                  (r"\bhigh\b", "high")])
    if typ == "chirp":
        ev["variant"] = _first(s, [(r"\b(rising|upward|ascending)\b", "rising"),
                                   (r"\b(falling|downward|descending)\b", "falling")])
    elif typ == "noise":
        ev["variant"] = _first(s, [(r"\b(white|hiss)", "white"),
                                   (r"(muffled|low-?pass|rumble|dull)", "muffled")])
    elif typ == "clicks":
        m = re.search(r"\b(one|two|three|four|five|\d+)\b", s)
        ev["n_clicks"] = _to_int(m.group(1)) if m else None
    return ev


def parse_caption(caption: str) -> dict:
    """Parse a caption into ``{"count": int, "events": [attribute dicts in order]}``.

    Events are the phrases between sequence words (``then``, ``followed by``,
    ``and finally``, ``after that``, ``;``); a phrase is an event if it names a
    type (click / chirp|sweep / noise|hiss|rumble / tone|beep).  An optional
    preamble before ``:`` ("Three sounds:") gives the count; otherwise the count
    is the number of parsed events.
    """
    text = caption.strip().rstrip(".").lower()
    count = None
    if ":" in text:
        pre, text = text.split(":", 1)
        m = re.search(r"\b(a single|single|one|two|three|four|five|\d+)\b", pre)
        if m:
            count = _to_int(m.group(1))
    parts = re.split(r",?\s*\b(?:and then|and finally|followed by|then|finally|after that)\b\s*|;", text)
    events = [ev for ev in map(_parse_phrase, parts) if ev]
    return {"count": count if count is not None else len(events), "events": events}


def align_events(true: list[dict], predicted: list[dict]) -> dict[int, int]:
    """``{true index: predicted index}`` of the events aligned by type in order (``difflib``'s
    longest matching blocks), as :func:`attribute_accuracy` scores them."""
    sm = difflib.SequenceMatcher(None, [e["type"] for e in true], [e["type"] for e in predicted], autojunk=False)
    return {b.a + i: b.b + i for b in sm.get_matching_blocks() for i in range(b.size)}


def attribute_accuracy(predicted_caption: str, scene: dict | list) -> dict:
    """Score a caption against a scene (dict with ``"events"`` or the event list).

    The caption is parsed with :func:`parse_caption`, and predicted events are
    aligned to the true ones by event type in order (``difflib`` longest matching
    blocks).  Returns a dict of accuracies in [0, 1]:

    * ``count``    - 1.0 if the stated/parsed number of events is right, else 0.0
    * ``types``    - aligned (same-type, in-order) events / max(#true, #predicted)
    * ``variant``  - chirp direction and noise colour, over true chirps/noises
    * ``pitch``    - pitch band, over true tones/chirps
    * ``loudness`` - over all true events
    * ``length``   - short/long, over true tones/chirps/noises
    * ``n_clicks`` - click count, over true click trains
    * ``overall``  - mean of the above that apply

    Per-attribute scores count a true event as correct only if it is aligned
    to a predicted event with the same value; attributes with no applicable
    true event are ``None`` and left out of ``overall``.
    """
    true = scene["events"] if isinstance(scene, dict) else scene
    pred = parse_caption(predicted_caption)
    pev = pred["events"]
    pairs = align_events(true, pev)
    out = {"count": float(pred["count"] == len(true)),
           "types": len(pairs) / max(len(true), len(pev), 1)}
    for attr in _ATTRS:
        idx = [i for i, e in enumerate(true) if e.get(attr) is not None]
        out[attr] = (sum(i in pairs and pev[pairs[i]][attr] == true[i][attr] for i in idx) / len(idx)
                     if idx else None)
    vals = [v for v in out.values() if v is not None]
    out["overall"] = sum(vals) / len(vals)
    return out
