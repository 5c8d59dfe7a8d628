"""Record a session while it streams, and read it back: "nothing lost".

A recording is a folder (format described for other tools in docs/RECORDING.md)::

    manifest.json            what was recorded; "closed": true once the recorder stopped cleanly
    video/frames.csv         one row per frame: frame,t_ns,index,dropped_before,gap_before_s,crc32
    video/seg_00000000_00060.mkv   lossless FFV1 segments, each closed after ~segment_s
    sensors/<stream>.bin     append-only binary chunk records, each with a length and a CRC32

Modules:

- :mod:`.format`: file names, the frames table, the sensor chunk record, the manifest check,
  the tally of skips (:class:`Skips`);
- :mod:`.writer`: :class:`Recorder` (with :mod:`.segment`, the files it writes);
- :mod:`.reader`: :func:`open_recording`, :func:`is_recording`;
- :mod:`.replay`: :class:`Recording` and the sources it hands out
  (:class:`RecordingCameraSource`, :class:`ReplaySensorSource`);
- :mod:`.importers`: PhysRecorder folders (video + ``frames_timestamp.csv`` + ``BVP.csv``).

A recording also opens through the source registries, so a pipeline needs no special case:
``firmware_bridge.cameras.open_camera("replay://DIR")`` gives its frames and
``firmware_bridge.sensors.open_sensor("replay://DIR")`` its sensor streams (both take
``realtime`` and ``origin_ns``).
"""
from __future__ import annotations

from firmware_bridge.recording.format import (
    CODECS,
    FORMAT,
    FORMAT_VERSION,
    FRAMES_CSV,
    FRAMES_HEADER,
    MANIFEST,
    Skips,
    VideoCodec,
    decode_chunk_records,
    encode_chunk_record,
    frame_crc32,
)
from firmware_bridge.recording.importers import PhysRecorderRecording, read_timestamp_csv
from firmware_bridge.recording.reader import EmofuseRecording, is_recording, open_recording
from firmware_bridge.recording.replay import Recording, RecordingCameraSource, ReplaySensorSource
from firmware_bridge.recording.writer import Recorder

__all__ = [
    "CODECS",
    "FORMAT",
    "FORMAT_VERSION",
    "FRAMES_CSV",
    "FRAMES_HEADER",
    "MANIFEST",
    "EmofuseRecording",
    "PhysRecorderRecording",
    "Recorder",
    "Recording",
    "RecordingCameraSource",
    "ReplaySensorSource",
    "Skips",
    "VideoCodec",
    "decode_chunk_records",
    "encode_chunk_record",
    "frame_crc32",
    "is_recording",
    "open_recording",
    "read_timestamp_csv",
]
