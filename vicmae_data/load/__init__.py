"""Stage 3: a .beton -> batches of views, in compiled code across threads.

``samplers`` (frame indices) and ``crops`` (crop/flip parameters) are numba functions the
``decoder`` calls per sample, with ``native/`` (libwebp, OpenCV's resize, and calling C by
address from cached numba code); ``order`` (which samples, per rank and epoch), ``memory`` (how
the bytes are read), ``loader`` (``make_loader``), ``batch`` (what it yields), ``augment``
(torch-side augmentation and normalisation on the batch's device).
"""
