"""GAMA / FusionAudio generation defaults (the reference's), importable without torch."""

#: The reference's sampling defaults.
GENERATION_DEFAULTS = dict(temperature=0.1, top_p=0.95, top_k=300, max_new_tokens=1024, do_sample=True, num_beams=1)
