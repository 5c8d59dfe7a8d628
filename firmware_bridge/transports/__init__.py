"""Transports that bring contact-sensor samples onto the host clock as SensorChunk records.

``serial``: a board speaking the emofuse wire protocol on a UART (pyserial);
``ble``: Bluetooth LE heart-rate straps, GATT Heart Rate Measurement (bleak);
``lsl``: Lab Streaming Layer inlets (pylsl).
Each module imports its library only when a source is built, so importing this package
needs none of them; a missing one raises ``MissingDependencyError`` naming the ``sensors``
extra.
"""
