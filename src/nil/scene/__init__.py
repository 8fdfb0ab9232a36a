"""Scenes: objects around the robot (a chair, a bar, a balance board, any MJCF snippet) and task success.

`skill.yaml`'s `scene` section lists the objects relative to the robot's initial pose (x forward along
the root's heading, y to its left, z up from the floor). `RobotSpec.load_model()` adds them to the
model (nil.scene.build), so every simulator backend, e0 and the teacher see them, while the robot mask
excludes them (they are not in the robot's subtree). nil.scene.check rejects a scene that cannot work
(an object inside the robot at the initial pose, a bar out of reach); nil.scene.success scores an
episode's states for the paper's whole-body tasks (sitting, hanging, balancing).
"""

from nil.scene.build import OBJECT_PREFIX, object_geom_mask, object_index_of_body, scene_key

__all__ = ["OBJECT_PREFIX", "object_geom_mask", "object_index_of_body", "scene_key"]
