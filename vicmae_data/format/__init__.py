"""The .beton file: ffcv's container holding vicmae's fields.

``frames`` (the WebP frame-list field), ``beton`` (the three fields, raw read access),
``pages`` (page layout), ``tables`` (the file's tables read with NumPy alone). The libwebp
bindings the decoder calls are in :mod:`vicmae_data.load.native`.
"""
