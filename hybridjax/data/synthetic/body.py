"""A 13-joint stick body with per-subject proportions and its forward kinematics.

World frame (Vicon-like, millimetres): z up, the floor at z = 0; the subject stands near the origin facing
+x, so its left is +y (the DHP19 release uses the same right-handed, z-up convention).

Limb directions are given by two angles per segment, measured in the body frame (x forward, y to the
subject's left, z up) for a segment hanging straight down at (0, 0):

    d(abduction a, flexion f) = (sin f cos a,  s sin a,  -cos f cos a),   s = +1 left side, -1 right side

so ``a = 90 deg`` points sideways (outwards), ``a = 180 deg`` straight up, ``f = 90 deg`` forwards and a
negative flexion backwards. ``d`` is a unit vector for every (a, f). The joints are

    shoulder = neck -/+ shoulder_half_width * lateral,   elbow = shoulder + upper_arm * d(upper arm),
    hand = elbow + forearm * d(forearm),   knee = hip + thigh * d(thigh),   foot = knee + shin * d(shin)

with the whole body then yawed about z and translated; the height is chosen so the lower foot joint
(an ankle marker) sits ``ankle_height`` above the floor plus any jump height.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# The official DHP19 joint order.
JOINT_NAMES = (
    "head", "shoulderR", "shoulderL", "elbowR", "elbowL", "hipR", "hipL",
    "handR", "handL", "kneeR", "kneeL", "footR", "footL",
)
NUM_JOINTS = len(JOINT_NAMES)
J = {name: index for index, name in enumerate(JOINT_NAMES)}

# Angle channels a motion provides (degrees or millimetres, one value per time step); missing ones rest.
SEGMENTS = ("upper_arm_R", "forearm_R", "upper_arm_L", "forearm_L", "thigh_R", "shin_R", "thigh_L", "shin_L")
REST_ANGLES = {  # (abduction, flexion) in degrees: relaxed standing
    "upper_arm_R": (8.0, 2.0), "forearm_R": (6.0, 12.0),
    "upper_arm_L": (8.0, 2.0), "forearm_L": (6.0, 12.0),
    "thigh_R": (3.0, 0.0), "shin_R": (2.0, -2.0),
    "thigh_L": (3.0, 0.0), "shin_L": (2.0, -2.0),
}
TRUNK_CHANNELS = ("lean", "side_bend", "yaw", "jump", "dx", "dy")  # deg, deg, deg, mm, mm, mm


@dataclasses.dataclass(frozen=True)
class BodyProportions:
    """Segment lengths and limb radii of one subject, in millimetres."""

    height: float  # standing height (floor to top of head)
    ankle_height: float  # height of the foot joint (ankle marker) above the floor when standing
    shin: float  # knee -> foot joint
    thigh: float  # hip -> knee
    hip_half_width: float  # pelvis centre -> each hip joint
    torso: float  # pelvis centre -> neck (mid-shoulder point)
    shoulder_half_width: float  # neck -> each shoulder joint
    head: float  # neck -> head joint (the head marker sits near the top of the head)
    upper_arm: float  # shoulder -> elbow
    forearm: float  # elbow -> hand joint (wrist/hand marker)
    torso_radius: float  # half width of the torso capsule
    arm_radius: float  # upper-arm capsule radius (the forearm is 0.85 of it)
    leg_radius: float  # thigh capsule radius (the shin is 0.75 of it)
    head_radius: float  # head sphere radius

    @property
    def hip_height(self) -> float:
        return self.ankle_height + self.shin + self.thigh


def sample_proportions(rng: np.random.Generator, height_range=(1580.0, 1920.0)) -> BodyProportions:
    """Draws a plausible adult: anthropometric ratios of the height, each jittered by ~4 % (1 sigma)."""
    height = float(rng.uniform(*height_range))

    def part(ratio: float) -> float:
        return float(height * ratio * (1.0 + 0.04 * np.clip(rng.standard_normal(), -2.5, 2.5)))

    build = float(rng.uniform(0.9, 1.15))  # slim .. broad, scales every radius together
    return BodyProportions(
        height=height,
        ankle_height=part(0.045),
        shin=part(0.24),
        thigh=part(0.255),
        hip_half_width=part(0.057),
        torso=part(0.29),
        shoulder_half_width=part(0.103),
        head=part(0.13),
        upper_arm=part(0.172),
        forearm=part(0.165),
        torso_radius=height * 0.082 * build,
        arm_radius=height * 0.026 * build,
        leg_radius=height * 0.04 * build,
        head_radius=height * 0.058,
    )


def limb_direction(abduction_deg, flexion_deg, side: float) -> np.ndarray:
    """Unit direction(s) ``d(a, f)`` of the module docstring, shape ``(..., 3)``; side +1 left, -1 right."""
    a = np.deg2rad(np.asarray(abduction_deg, dtype=np.float64))
    f = np.deg2rad(np.asarray(flexion_deg, dtype=np.float64))
    return np.stack([np.sin(f) * np.cos(a), side * np.sin(a), -np.cos(f) * np.cos(a)], axis=-1)


def _rot_z(angle_rad: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    zero, one = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)], -2)


def forward_kinematics(
    body: BodyProportions, channels: dict, num_steps: int, root_xy=(0.0, 0.0), base_yaw_deg: float = 0.0
) -> np.ndarray:
    """Joint positions ``(T, 13, 3)`` in mm (world frame) from the angle channels of a motion.

    ``channels`` maps a segment name of :data:`SEGMENTS` to an ``(abduction, flexion)`` pair of arrays
    (degrees) and a trunk channel of :data:`TRUNK_CHANNELS` to an array; absent entries take their rest
    value (:data:`REST_ANGLES`, zero for the trunk). Every array has ``num_steps`` entries.
    """

    def channel(name, default):
        value = channels.get(name, default)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (num_steps,))

    lean = np.deg2rad(channel("lean", 0.0))  # forward pitch of the trunk about the hips
    side_bend = np.deg2rad(channel("side_bend", 0.0))  # towards the subject's left for positive values
    # Trunk axis (pelvis -> neck) and the lateral axis (towards the left shoulder), body frame.
    spine = np.stack([np.sin(lean) * np.cos(side_bend), np.sin(side_bend), np.cos(lean) * np.cos(side_bend)], -1)
    lateral = np.stack([np.zeros(num_steps), np.cos(side_bend), -np.sin(side_bend)], -1)
    lateral -= spine * np.sum(lateral * spine, -1, keepdims=True)
    lateral /= np.linalg.norm(lateral, axis=-1, keepdims=True)

    joints = np.zeros((num_steps, NUM_JOINTS, 3))
    pelvis = np.zeros((num_steps, 3))
    neck = pelvis + body.torso * spine
    joints[:, J["head"]] = neck + body.head * spine
    left_y = np.array([0.0, 1.0, 0.0])
    for side_name, side in (("R", -1.0), ("L", 1.0)):
        shoulder = neck + side * body.shoulder_half_width * lateral
        hip = pelvis + side * body.hip_half_width * left_y
        pieces = {}
        for segment, length in (("upper_arm", body.upper_arm), ("forearm", body.forearm),
                                ("thigh", body.thigh), ("shin", body.shin)):
            rest = REST_ANGLES[f"{segment}_{side_name}"]
            angles = channels.get(f"{segment}_{side_name}", rest)
            abduction = np.broadcast_to(np.asarray(angles[0], dtype=np.float64), (num_steps,))
            flexion = np.broadcast_to(np.asarray(angles[1], dtype=np.float64), (num_steps,))
            pieces[segment] = length * limb_direction(abduction, flexion, side)
        elbow = shoulder + pieces["upper_arm"]
        knee = hip + pieces["thigh"]
        joints[:, J[f"shoulder{side_name}"]] = shoulder
        joints[:, J[f"elbow{side_name}"]] = elbow
        joints[:, J[f"hand{side_name}"]] = elbow + pieces["forearm"]
        joints[:, J[f"hip{side_name}"]] = hip
        joints[:, J[f"knee{side_name}"]] = knee
        joints[:, J[f"foot{side_name}"]] = knee + pieces["shin"]

    # Stand on the floor: the lower ankle at ankle_height (+ jump), then yaw and translate.
    lowest_foot = np.minimum(joints[:, J["footR"], 2], joints[:, J["footL"], 2])
    joints[..., 2] += (body.ankle_height + channel("jump", 0.0) - lowest_foot)[:, None]
    yaw = np.deg2rad(base_yaw_deg + channel("yaw", 0.0))
    joints = np.einsum("tij,tkj->tki", _rot_z(yaw), joints)
    joints[..., 0] += root_xy[0] + channel("dx", 0.0)[:, None]
    joints[..., 1] += root_xy[1] + channel("dy", 0.0)[:, None]
    return joints


# Rendered primitives: (first joint or point, second joint or point, radius attribute, radius factor,
# material). Named points beyond the joints are computed by :func:`primitive_points`.
PRIMITIVES = (
    ("pelvis", "neck", "torso_radius", 1.0, "shirt"),
    ("hipR", "hipL", "leg_radius", 1.25, "trousers"),
    ("shoulderR", "shoulderL", "arm_radius", 1.5, "shirt"),
    ("head_centre", "head_centre", "head_radius", 1.0, "skin"),
    ("shoulderR", "elbowR", "arm_radius", 1.0, "shirt"),
    ("shoulderL", "elbowL", "arm_radius", 1.0, "shirt"),
    ("elbowR", "handR", "arm_radius", 0.85, "skin"),
    ("elbowL", "handL", "arm_radius", 0.85, "skin"),
    ("hipR", "kneeR", "leg_radius", 1.0, "trousers"),
    ("hipL", "kneeL", "leg_radius", 1.0, "trousers"),
    ("kneeR", "footR", "leg_radius", 0.75, "trousers"),
    ("kneeL", "footL", "leg_radius", 0.75, "trousers"),
    ("footR", "toeR", "leg_radius", 0.6, "shoes"),
    ("footL", "toeL", "leg_radius", 0.6, "shoes"),
)


def primitive_points(body: BodyProportions, joints: np.ndarray) -> dict:
    """Joint positions plus the derived points the renderer needs (pelvis, neck, head centre, toes)."""
    points = {name: joints[..., index, :] for index, name in enumerate(JOINT_NAMES)}
    points["pelvis"] = 0.5 * (points["hipR"] + points["hipL"])
    points["neck"] = 0.5 * (points["shoulderR"] + points["shoulderL"])
    up = points["head"] - points["neck"]
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    # The head marker sits near the crown, the sphere centre one radius below it.
    points["head_centre"] = points["head"] - 0.8 * body.head_radius * up
    hips = points["hipL"] - points["hipR"]
    forward = np.cross(hips, np.array([0.0, 0.0, 1.0]))
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    for side in ("R", "L"):
        toe = points[f"foot{side}"] + 0.13 * body.height * forward
        toe[..., 2] = np.maximum(toe[..., 2] - body.ankle_height * 0.6, points[f"foot{side}"][..., 2] - 60.0)
        points[f"toe{side}"] = toe
    return points
