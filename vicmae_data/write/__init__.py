"""Stage 2: items -> WebP frames -> a .beton.

``transcode`` (one item -> frames), ``worker`` (what a worker process runs), ``parts`` (the
resume cache), ``convert`` (a dataset -> a .beton), ``merge`` (.betons -> one),
``beton_writer`` (samples -> the file).
"""
