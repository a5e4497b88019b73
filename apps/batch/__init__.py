"""Batch-inference front end for deployment (MONAI Deploy / Holoscan I/O conventions); see README.md."""
