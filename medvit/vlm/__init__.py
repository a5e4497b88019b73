"""Vision-language models (VILA-M3 core: issue 16) and their curricula (RetinaVLM: ``medvit.vlm.retina``)."""
