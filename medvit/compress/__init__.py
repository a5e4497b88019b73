"""Post-training tools on a trained medvit model: pruning (NViT), int8 quantisation (Q-HyViT-style PTQ through PT2E).

Each tool takes a model made by :func:`medvit.models.create_model` (or loaded by ``load_model``) and returns an
ordinary medvit model or checkpoint.
"""
