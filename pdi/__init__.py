"""IHE Portable Data for Imaging (PDI): write de-identified DICOM media, read media back.

This package imports only pydicom and the standard library: callers (stage 1, the Receiver,
the stage 2 importer) pass it file paths and get plain results back.
"""

from pdi.model import MediaError, MediaOptions, VolumeResult
from pdi.reader import MediaContents, MediaInstance, read_media
from pdi.writer import write_media

__all__ = [
    "MediaContents",
    "MediaError",
    "MediaInstance",
    "MediaOptions",
    "VolumeResult",
    "read_media",
    "write_media",
]
