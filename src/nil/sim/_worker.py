"""Entry point of a CPU simulator worker process: `python -m nil.sim._worker` (see nil.sim.workers)."""

from nil.sim.workers import worker_main

if __name__ == "__main__":
    worker_main()
