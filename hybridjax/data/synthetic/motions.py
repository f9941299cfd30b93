"""A library of DHP19-like movements as angle channels over time (see :mod:`.body` for the angles).

Every movement is periodic in a phase ``phi(t) = 2 pi f t + phi0 + n(t)`` where the frequency ``f`` is
drawn from the movement's range, ``phi0`` is random and ``n(t)`` is smooth phase noise (a sum of three
slow sinusoids, ~0.35 rad), so repetitions differ in timing; the amplitude is scaled by a factor drawn in
[0.8, 1.15] and each recording adds slow body sway (a few degrees of yaw, ~1 cm of drift).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MotionSample:
    """The random draws that make one performance of a movement unique."""

    frequency_hz: float  # repetitions per second
    amplitude: float  # scale of the movement's excursions (1 = nominal)
    phase0: float  # initial phase, radians
    noise_freqs: tuple  # frequencies (Hz) of the smooth phase-noise sinusoids
    noise_amps: tuple  # their amplitudes (radians)
    noise_phases: tuple  # their phases (radians)
    side: int  # +1 left, -1 right, for one-sided movements
    sway: tuple  # (yaw deg, dx mm, dy mm) amplitudes of the slow body sway
    sway_freq_hz: float  # frequency of that sway


def _pulse(phi):
    """0 .. 1 .. 0 once per period, smooth: (1 - cos phi) / 2."""
    return 0.5 * (1.0 - np.cos(phi))


def _half_positive(phi):
    """Positive half-wave of sin, squared-smooth at the ends."""
    return np.maximum(np.sin(phi), 0.0) ** 1.5


def _arm_abduction(phi, a, side):
    lift = 150.0 * a * _pulse(phi)
    channels = {}
    sides = ("R", "L") if side == 0 else (("L",) if side > 0 else ("R",))
    for s in sides:
        channels[f"upper_arm_{s}"] = (8.0 + lift, 2.0 + 5.0 * np.sin(phi))
        channels[f"forearm_{s}"] = (8.0 + lift, 10.0 + 4.0 * np.sin(phi))
    return channels


def _arm_circles(phi, a, side):
    abd = 90.0 + 28.0 * a * np.cos(phi)
    flex = 30.0 * a * np.sin(phi)
    return {"upper_arm_R": (abd, flex), "forearm_R": (abd, flex + 5.0),
            "upper_arm_L": (abd, flex), "forearm_L": (abd, flex + 5.0)}


def _punches(phi, a, side):
    channels = {"lean": 5.0 + 3.0 * np.sin(2 * phi), "yaw": 8.0 * a * np.sin(phi)}
    for s, offset in (("R", 0.0), ("L", np.pi)):
        e = _half_positive(phi + offset) * a  # extension 0 (guard) .. 1 (arm straight)
        channels[f"upper_arm_{s}"] = (25.0 - 10.0 * e, 10.0 + 77.0 * e)  # guard: elbow down, fist at the chin
        channels[f"forearm_{s}"] = (15.0 - 8.0 * e, 160.0 - 73.0 * e)
    channels["thigh_R"] = (6.0, 8.0)
    channels["thigh_L"] = (6.0, -4.0)
    return channels


def _kicks(phi, a, side):
    channels = {"upper_arm_R": (30.0, 30.0), "forearm_R": (20.0, 110.0),
                "upper_arm_L": (30.0, 30.0), "forearm_L": (20.0, 110.0), "lean": -4.0 * np.ones_like(phi)}
    for s, offset in (("R", 0.0), ("L", np.pi)):
        e = _half_positive(phi + offset) * a
        thigh_flex = 75.0 * e
        knee_bend = 80.0 * np.sin(np.pi * np.clip(e, 0.0, 1.0)) ** 2 * (1.0 - 0.6 * e) + 4.0
        channels[f"thigh_{s}"] = (4.0, thigh_flex)
        channels[f"shin_{s}"] = (3.0, thigh_flex - knee_bend)
    return channels


def _squats(phi, a, side):
    k = _pulse(phi) * a
    thigh_flex = 85.0 * k
    return {
        "thigh_R": (8.0 + 6.0 * k, thigh_flex), "thigh_L": (8.0 + 6.0 * k, thigh_flex),
        "shin_R": (4.0, -25.0 * k), "shin_L": (4.0, -25.0 * k),
        "lean": 35.0 * k,
        "upper_arm_R": (10.0, 5.0 + 80.0 * k), "forearm_R": (10.0, 8.0 + 80.0 * k),
        "upper_arm_L": (10.0, 5.0 + 80.0 * k), "forearm_L": (10.0, 8.0 + 80.0 * k),
    }


def _jumping_jacks(phi, a, side):
    s = _pulse(phi)
    arm = 10.0 + 155.0 * a * s
    leg = 3.0 + 16.0 * a * s
    return {
        "upper_arm_R": (arm, 0.0), "forearm_R": (arm + 3.0, 3.0),
        "upper_arm_L": (arm, 0.0), "forearm_L": (arm + 3.0, 3.0),
        "thigh_R": (leg, 0.0), "shin_R": (leg, -2.0), "thigh_L": (leg, 0.0), "shin_L": (leg, -2.0),
        "jump": 70.0 * a * np.abs(np.sin(phi)),
    }


def _walking_in_place(phi, a, side):
    channels = {}
    for s, offset in (("R", 0.0), ("L", np.pi)):
        lift = _half_positive(phi + offset) * a
        channels[f"thigh_{s}"] = (3.0, 60.0 * lift)
        channels[f"shin_{s}"] = (2.0, -35.0 * lift - 2.0)
        swing = -28.0 * a * np.sin(phi + offset)
        channels[f"upper_arm_{s}"] = (10.0, swing)
        channels[f"forearm_{s}"] = (8.0, swing + 35.0)
    return channels


def _wave(phi, a, side):
    s = "L" if side > 0 else "R"
    other = "R" if s == "L" else "L"
    return {
        f"upper_arm_{s}": (150.0 + 6.0 * np.sin(phi), 10.0),
        f"forearm_{s}": (165.0 + 35.0 * a * np.sin(phi), 15.0),
        f"upper_arm_{other}": (8.0, 2.0), f"forearm_{other}": (6.0, 12.0),
        "side_bend": 4.0 * np.sin(phi) * side,
    }


def _leg_abduction(phi, a, side):
    channels = {"upper_arm_R": (40.0, 5.0), "forearm_R": (40.0, 10.0),
                "upper_arm_L": (40.0, 5.0), "forearm_L": (40.0, 10.0)}
    for s, offset in (("R", 0.0), ("L", np.pi)):
        e = _half_positive(phi + offset) * a
        channels[f"thigh_{s}"] = (3.0 + 42.0 * e, 5.0 * e)
        channels[f"shin_{s}"] = (2.0 + 40.0 * e, 2.0 * e)
    channels["side_bend"] = 8.0 * a * np.sin(phi)
    return channels


def _side_bends(phi, a, side):
    bend = 28.0 * a * np.sin(phi)
    return {
        "side_bend": bend,
        "upper_arm_R": (150.0 + 0.5 * bend, 5.0), "forearm_R": (160.0 + 0.5 * bend, 8.0),
        "upper_arm_L": (150.0 - 0.5 * bend, 5.0), "forearm_L": (160.0 - 0.5 * bend, 8.0),
    }


# name -> (angle function of (phase, amplitude, side), frequency range in Hz)
MOTIONS = {
    "arm_abduction": (_arm_abduction, (0.45, 0.8)),
    "arm_circles": (_arm_circles, (0.8, 1.4)),
    "punches": (_punches, (0.9, 1.5)),
    "kicks": (_kicks, (0.5, 0.85)),
    "squats": (_squats, (0.4, 0.65)),
    "jumping_jacks": (_jumping_jacks, (0.8, 1.2)),
    "walking_in_place": (_walking_in_place, (0.8, 1.2)),
    "wave": (_wave, (1.4, 2.4)),
    "leg_abduction": (_leg_abduction, (0.5, 0.8)),
    "side_bends": (_side_bends, (0.3, 0.5)),
}
MOTION_NAMES = tuple(MOTIONS)


def sample_motion(name: str, rng: np.random.Generator) -> MotionSample:
    """Draws the speed, amplitude, phase noise and sway of one performance of movement ``name``."""
    if name not in MOTIONS:
        raise ValueError(f"unknown motion '{name}'; choose one of {', '.join(MOTION_NAMES)}")
    low, high = MOTIONS[name][1]
    return MotionSample(
        frequency_hz=float(rng.uniform(low, high)),
        amplitude=float(rng.uniform(0.8, 1.15)),
        phase0=float(rng.uniform(0.0, 2 * np.pi)),
        noise_freqs=tuple(float(f) for f in rng.uniform(0.1, 0.6, 3)),
        noise_amps=tuple(float(v) for v in rng.uniform(0.05, 0.2, 3)),
        noise_phases=tuple(float(v) for v in rng.uniform(0.0, 2 * np.pi, 3)),
        side=int(rng.choice([-1, 0, 1])),
        sway=(float(rng.uniform(1.0, 5.0)), float(rng.uniform(3.0, 15.0)), float(rng.uniform(3.0, 15.0))),
        sway_freq_hz=float(rng.uniform(0.05, 0.2)),
    )


def motion_channels(name: str, sample: MotionSample, t_s: np.ndarray) -> dict:
    """Angle channels of :mod:`.body` at times ``t_s`` (seconds) for one performance."""
    function = MOTIONS[name][0]
    t_s = np.asarray(t_s, dtype=np.float64)
    noise = sum(amp * np.sin(2 * np.pi * freq * t_s + ph)
                for freq, amp, ph in zip(sample.noise_freqs, sample.noise_amps, sample.noise_phases, strict=True))
    phi = 2 * np.pi * sample.frequency_hz * t_s + sample.phase0 + noise
    side = sample.side if sample.side != 0 or name != "wave" else 1
    channels = dict(function(phi, sample.amplitude, side))
    sway = np.sin(2 * np.pi * sample.sway_freq_hz * t_s + sample.phase0)
    drift = np.cos(2 * np.pi * sample.sway_freq_hz * 0.7 * t_s + 0.5 * sample.phase0)
    channels["yaw"] = channels.get("yaw", 0.0) + sample.sway[0] * sway
    channels["dx"] = sample.sway[1] * drift
    channels["dy"] = sample.sway[2] * sway
    return channels
