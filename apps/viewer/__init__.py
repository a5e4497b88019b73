"""The clinician viewer: a Streamlit app over medvit (``medvit viewer``; entry script ``app.py``).

Thin by design: reading, windowing/rendering, preprocessing, prediction and heatmaps all come from the medvit
library (``medvit.io``, ``medvit.infer``, ``medvit.visualize``). Modules here hold only what is specific to the
viewer: layout and widgets, session caching, the composition of the on-screen view (zoom, overlays), and the
local feedback store. Importing ``medvit`` never imports this package (nor Streamlit).
"""
