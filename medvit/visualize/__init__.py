"""Visualisation: attributions (attention rollout, Grad-CAM), heatmap colours and overlays, MAE reconstruction figures.

matplotlib loads only inside the functions that draw.
"""

from medvit.visualize.attribution import METHODS, Method, attention_rollout, explain, grad_cam
from medvit.visualize.overlay import colormap, overlay

__all__ = ["METHODS", "Method", "attention_rollout", "colormap", "explain", "grad_cam", "overlay"]
