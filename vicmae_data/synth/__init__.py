"""Small real datasets in the shipped layouts: ``media`` (clips, images), ``dataset``."""
