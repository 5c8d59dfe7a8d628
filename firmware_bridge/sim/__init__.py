"""The simulated subject: face video, ECG, PPG and EDA generated from the same heart beats.

The stand-in for real cameras and sensor boards in tests and in the demo::

    from firmware_bridge.sim import SimConfig, synth_session

    s = synth_session(SimConfig(duration_s=20, hr_bpm=((0, 60), (20, 120)), seed=1))
    s.ecg.values, s.ecg.fs_hz, s.r_peak_idx     # ECG in mV with its true R peaks
    s.frame(0), s.face_box(0), s.bvp           # a BGR frame, its face box, the face pulse

See docs/SIMULATOR.md for the generative model, every parameter and the physiology behind it.
``firmware_bridge.sim.physio`` holds the waveform models, ``firmware_bridge.sim.face`` the
renderer, ``firmware_bridge.sim.expression`` facial expressions and per-subject appearance,
``firmware_bridge.sim.noise`` realistic ECG noise.
"""
from firmware_bridge.sim.expression import FaceAppearance
from firmware_bridge.sim.session import SimConfig, SyntheticSession, Trace, synth_session

__all__ = ["FaceAppearance", "SimConfig", "SyntheticSession", "Trace", "synth_session"]
