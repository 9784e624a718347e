"""The defaults a library function and its ``vicmae-data`` option share, written once.

No imports: the command line reads these when it starts, whichever command runs, so
``vicmae-data --help`` and ``info`` load no numpy, Pillow or PyAV for them. Conversion's
encoding defaults live in :mod:`vicmae_data.write.settings`, light for the same reason.

    from vicmae_data.defaults import MERGE_WORKERS
"""

MERGE_WORKERS = 4  # merge: threads reading the inputs
VERIFY_WORKERS = 1  # verify: processes decoding frames (1: in this process)
PREVIEW_MAX_FRAMES = 16  # preview: frames on the contact sheet at most
PREVIEW_THUMB_WIDTH = 256  # preview: width of each frame on the sheet, in pixels
SYNTH_ITEMS = 24  # synth: items (videos or images) per split
SYNTH_STYLE = "colour"  # synth: what the media show (a key of synth.dataset.STYLES)
