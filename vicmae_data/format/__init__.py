"""The .beton file: ffcv's container holding vicmae's fields; libwebp bindings.

``frames`` (the WebP frame-list field), ``beton`` (the three fields, raw read access),
``pages`` (page layout), ``libwebp`` (decoding, callable from compiled code).
"""
