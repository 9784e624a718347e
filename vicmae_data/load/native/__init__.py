"""C the decoder calls from compiled code: libwebp, OpenCV's resize, and how to call them.

``ccall`` (an address-taking intrinsic, so numba caches the calling code on disk),
``libwebp`` (decoding WebP frames, whole or cropped) and ``cvresize`` (OpenCV's resize with
a chosen interpolation, from the OpenCV library ffcv links). Only ``load/`` uses them.
"""
