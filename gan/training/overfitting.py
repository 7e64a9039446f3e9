"""When D overfitted, read from the run's log: the sentence the train summary ("why it stopped") and the model card
carry.

With adaptive augmentation the log has ADA's own signal, r_t = E[sign(D(real))] (`real_sign`), and p (`augment_p`):
D overfits where r_t, averaged over `WINDOW` steps, is above the target, and the sentence says how far ADA raised p.
Without it, the log's mean σ(D(real)) and σ(D(fake)) (`d_real`, `d_fake`) show D winning outright: both at least
0.95 apart from their ideal over `WINDOW` steps (a D that tells every real image from every fake one, the regime
StyleGAN2-ADA was written for).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WINDOW = 100  # steps averaged before a signal counts
OUTRIGHT = 0.95  # mean σ(D(real)) at least this and σ(D(fake)) at most 1 - this: D wins outright


def log_columns(log_tsv: str | Path) -> dict[str, np.ndarray]:
    """data/train/log.tsv as {column: values}."""
    lines = Path(log_tsv).read_text().splitlines()
    names = lines[0].split("\t")
    rows = np.array([[float(v) for v in line.split("\t")] for line in lines[1:] if line], dtype=np.float64)
    rows = rows.reshape(-1, len(names))
    return {name: rows[:, k] for k, name in enumerate(names)}


def _rolling(x: np.ndarray, w: int) -> np.ndarray:
    """Means over `w` consecutive steps; entry i ends at step i + w - 1."""
    return np.convolve(x, np.ones(w) / w, mode="valid")


def overfitting_note(cols: dict[str, np.ndarray], ada_target: float, window: int = WINDOW) -> str:
    """One sentence: whether and from which step D overfitted, and what adaptive augmentation did about it."""
    step = cols.get("step", np.zeros(0))
    if not len(step):
        return "no steps logged"
    w = min(window, len(step))
    if ada_target and "real_sign" in cols:
        r, p = _rolling(cols["real_sign"], w), cols["augment_p"]
        over = np.flatnonzero(r > ada_target)
        if not len(over):
            return (f"D did not overfit: r_t = E[sign(D(real))] over {w} steps stayed at or under the target "
                    f"{ada_target} (at most {r.max():.2f}); ADA's p stayed at or under {p.max():.2f}")  # fmt: skip
        return (f"D overfitted from step {int(step[over[0] + w - 1])} (r_t = E[sign(D(real))] over {w} steps above "
                f"the target {ada_target}, at most {r.max():.2f}); ADA raised p to {p.max():.2f} ({p[-1]:.2f} at "
                "the end)")  # fmt: skip
    if "d_real" not in cols or "d_fake" not in cols:
        return "not known (the log has no D outputs)"
    won = (_rolling(cols["d_real"], w) >= OUTRIGHT) & (_rolling(cols["d_fake"], w) <= 1 - OUTRIGHT)
    at = np.flatnonzero(won)
    if not len(at):
        return (f"D did not win outright (mean σ(D(real)) ≥ {OUTRIGHT} with σ(D(fake)) ≤ {1 - OUTRIGHT:.2f} over "
                f"{w} steps never held)")  # fmt: skip
    return (f"D won outright from step {int(step[at[0] + w - 1])} (mean σ(D(real)) ≥ {OUTRIGHT} with σ(D(fake)) ≤ "
            f"{1 - OUTRIGHT:.2f} over {w} steps, {len(at) / len(won):.0%} of the run): it overfitted, and no adaptive "
            "augmentation countered it (train.ada_target, e.g. 0.6 with train.augment, does)")  # fmt: skip
