"""Teachers: controllers that move a simulated robot to make a synthetic reference with known ground truth.

A teacher turns (time, state) into an action in [-1, 1] for the agent's own simulator, so the motion it
produces lies in the agent's action space. Built-ins, picked by `generator.teacher` in skill.yaml:

- `cpg`: a central pattern generator trot / walk (nil.teachers.cpg), for gaits;
- `keyframes`: PD tracking of a short sequence of poses, e.g. stand -> sit (nil.teachers.keyframes);
- `policy`: a trained NIL policy checkpoint (nil.teachers.policy);
- `balance`: a two-legged robot standing balanced (on a balance board), nil.teachers.biped.

For a two-legged robot `cpg` is the balance-feedback walker of nil.teachers.biped.

A plugin registers its factory with `@TEACHERS.register("name")`; `nil.teachers.measure` checks any
state-based teacher in physics only (speed, foot slip at the contact point, falls).
"""

from nil.teachers.base import TEACHERS, Teacher, make_teacher

__all__ = ["TEACHERS", "Teacher", "make_teacher"]
