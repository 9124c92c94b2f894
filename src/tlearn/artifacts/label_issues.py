"""label_issues.csv: images whose label looks wrong, and images far from every class.

One row per flagged image, most certain first: `path` (relative to the dataset), `given` (its label),
`suggested` (the class the cross-validated model believes; empty for an outlier), `score` (for a
label issue the margin p(suggested) - p(given); for an outlier the cosine distance to the nearest
class), `confidence` (p(suggested)) and `issue` ("label" or "outlier"). A user fixes labels in bulk
from it; tlearn itself never moves or deletes a file.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tlearn.core.files import write_text_atomic

LABEL_ISSUES_FILE = "label_issues.csv"
COLUMNS = ("path", "given", "suggested", "score", "confidence", "issue")


@dataclass(frozen=True)
class LabelIssue:
    path: str
    given: str
    suggested: str  # "" for an outlier
    score: float
    confidence: float  # nan for an outlier
    issue: str  # "label" or "outlier"


def write_label_issues(path: Path, issues: Sequence[LabelIssue]) -> Path:
    """Write the rows (a header alone when nothing was flagged), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for i in issues:
        confidence = "" if math.isnan(i.confidence) else f"{i.confidence:.4f}"
        writer.writerow([i.path, i.given, i.suggested, f"{i.score:.4f}", confidence, i.issue])
    write_text_atomic(path, buf.getvalue())
    return path


def replaceable(path: Path) -> bool:
    """Whether writing a list to `path` loses nothing: no file there, or one that starts with this list's
    header row (one that `write_label_issues` wrote before, which a new check replaces)."""
    path = Path(path)
    if not path.exists():
        return True
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() == ",".join(COLUMNS)
    except OSError:  # a folder, or a file this user cannot read
        return False


def read_label_issues(path: Path) -> list[LabelIssue] | None:
    """The rows of a label_issues.csv; None when there is no such file (the run did not check labels)."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            LabelIssue(
                path=row["path"],
                given=row["given"],
                suggested=row.get("suggested") or "",
                score=float(row.get("score") or "nan"),
                confidence=float(row.get("confidence") or "nan"),
                issue=row.get("issue") or ("label" if row.get("suggested") else "outlier"),
            )
            for row in csv.DictReader(fh)
        ]
