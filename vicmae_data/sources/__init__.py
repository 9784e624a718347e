"""Stage 1: datasets as they ship on disk -> lists of items (path, label, class, source id)."""
