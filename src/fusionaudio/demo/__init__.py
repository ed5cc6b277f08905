"""The demo task: seeded synthetic sound scenes (``scenes``), their scoring (``score``) and the audio
encoder's pre-training on per-column labels (``pretrain``); the bundled demo model is trained on them."""
