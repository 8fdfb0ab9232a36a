"""Entry point of a CPU simulator worker process: `python -m nil.sim._worker` (see mujoco_envs.worker_main)."""

from nil.sim.mujoco_envs import worker_main

if __name__ == "__main__":
    worker_main()
