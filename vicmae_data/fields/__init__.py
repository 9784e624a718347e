"""FFCV fields that vicmae writes and reads."""
