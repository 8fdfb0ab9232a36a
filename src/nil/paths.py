"""Where every file of a skill folder (the ReferenceBundle) lives. One place, so stages agree."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SkillPaths:
    """Paths inside one skill directory (see docs/architecture.md, "The ReferenceBundle")."""

    root: Path

    @property
    def config(self) -> Path:
        """The resolved skill config."""
        return self.root / "skill.yaml"

    @property
    def frame0(self) -> Path:
        """e0 with the background replaced by a flat colour."""
        return self.root / "frame0.png"

    @property
    def frame0_mask(self) -> Path:
        """m0: the simulator's exact robot mask of e0 (white = robot)."""
        return self.root / "frame0_mask.png"

    @property
    def reference(self) -> Path:
        """Stage-1 outputs."""
        return self.root / "reference"

    @property
    def video(self) -> Path:
        """The reference video as generated or imported."""
        return self.reference / "video.mp4"

    @property
    def retimed(self) -> Path:
        """The reference brought to the control rate (frame t = control step t)."""
        return self.reference / "retimed.mp4"

    @property
    def meta(self) -> Path:
        """Provenance and cache keys of stage 1."""
        return self.reference / "meta.json"

    @property
    def masks(self) -> Path:
        """[T,H,W] bool reference masks at the render resolution, after retiming."""
        return self.reference / "masks.npz"

    @property
    def segment_meta(self) -> Path:
        """Which segmenter ran, its cache key and the quality checks."""
        return self.reference / "segment.json"

    @property
    def root_velocity(self) -> Path:
        """Cache of the root velocity [T,2] read from the reference's floor flow, keyed on its inputs."""
        return self.reference / "root_velocity.npz"

    @property
    def embeddings(self) -> Path:
        """Folder of per-encoder reference embeddings (<encoder-id>.pt)."""
        return self.reference / "embeddings"

    @property
    def teacher(self) -> Path:
        """Ground-truth qpos/qvel of a synthetic reference."""
        return self.reference / "teacher.npz"

    @property
    def train(self) -> Path:
        """Checkpoints and TensorBoard events."""
        return self.root / "train"

    @property
    def checkpoints(self) -> Path:
        """Checkpoint folder."""
        return self.train / "checkpoints"

    @property
    def best(self) -> Path:
        """The policy of the best in-training evaluation (rl.keep_best), one checkpoint folder."""
        return self.train / "best"

    @property
    def eval(self) -> Path:
        """Evaluation outputs."""
        return self.root / "eval"

    @property
    def metrics(self) -> Path:
        """eval/metrics.json."""
        return self.eval / "metrics.json"

    @property
    def side_by_side(self) -> Path:
        """eval/side_by_side.mp4."""
        return self.eval / "side_by_side.mp4"

    @property
    def report(self) -> Path:
        """eval/report.html."""
        return self.eval / "report.html"
