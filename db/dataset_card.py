"""The dataset card (``README.md``) of a study's export: counts, label sources, agreement, licences, data notes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from db.rows import ExportFormat, FaceLabel, Split, StudyStats
from models.registry import REGISTRY

DATA_NOTE = (
    "The media were uploaded by the study's members; face crops are personal data. Use and share this export only "
    "within the consent and the ethics approval of the study, and delete it when the study's retention period ends."
)
"""The card's note on personal data."""
IMPORT_NOTE = (
    "The human and the model columns are distinct: `model_label`, `model_confidence`, `model_valence`, "
    "`model_arousal`, `model_engagement` and `prob_*` are the model's prediction; `human_label` is the annotators' "
    "majority class (empty where nobody labelled the face); `label`, `valence`, `arousal`, `engagement` are the "
    "exported value, human where given and else the model's (`*_source` says which), and `note` the annotators' "
    "notes. `model_reused` is True where the model did not classify this very frame: the face barely differed "
    "from an earlier classified face of its track (box within 5 %, pixels within 2 grey levels on average), whose "
    "prediction it carries (an analysis with `--exact` classifies every face).",
    "",
    "To correct labels in a spreadsheet, edit only the editable columns `label`, `valence`, `arousal`, "
    "`engagement`, `note` and import the file with `python -m db import-labels FILE.csv --study STUDY --annotator "
    "NAME`. The read-only columns `exported_label`, `exported_valence`, `exported_arousal`, `exported_engagement`, "
    "`exported_note` record what this export held: a cell counts as the importer's vote only where it differs from "
    "its `exported_*` partner, so an unedited export adds nothing and one edited label adds exactly one vote. Keep "
    "the `exported_*` columns as they are; emptying an editable cell is refused (withdraw a vote with undo in the "
    "web app). To confirm values as they are (agreeing with another annotator or the model), import a plain labels "
    "file instead: `face_id` plus any of `label, valence, arousal, engagement, note`, where every filled cell is a "
    "vote.",
)
"""The card's section on editing a CSV/Parquet export and importing it back."""
CSV_NOTE = (
    "CSV text cells that start with `=`, `+`, `-`, `@`, a tab or a carriage return are written with a leading "
    "apostrophe (`'`) so that spreadsheets show them as text and never run them as formulas (the OWASP CSV "
    "injection rule); numbers are written as numbers (a valence of -0.5 stays `-0.5`). The Parquet export keeps the "
    "raw text. `python -m db import-labels` removes that apostrophe again, so an unedited note is not a vote."
)
"""The card's note on the neutralised CSV cells."""


def _pct(n: int, total: int) -> str:
    """``n (p%)`` of ``total``."""
    return f"{n} ({100 * n / total:.0f}%)" if total else "0"


def _f(x: float | None) -> str:
    """Three decimals, ``n/a`` for None."""
    return "n/a" if x is None else f"{x:.3f}"


class CardCounts:
    """What the card says of the faces an export holds, counted one row at a time (exports that stream)."""

    def __init__(self) -> None:
        self.n = 0
        self.sources: dict[str, Counter[str]] = {f: Counter() for f in ("label", "valence", "arousal", "engagement")}
        self.models: set[tuple[str, str]] = set()
        self.human = 0
        self.model_only = 0

    def add(self, r: FaceLabel) -> None:
        """Counts one exported face."""
        self.n += 1
        for f, cnt in self.sources.items():
            cnt[getattr(r, f"{f}_source")] += 1
        if r.model:
            self.models.add((r.model, r.weights_hash or ""))
        self.human += r.label_source == "human"
        self.model_only += r.label_source == "model"

    def merge(self, other: CardCounts) -> None:
        """Adds another part's counts."""
        self.n += other.n
        for f, cnt in self.sources.items():
            cnt.update(other.sources[f])
        self.models |= other.models
        self.human += other.human
        self.model_only += other.model_only

    @classmethod
    def of(cls, rows: Iterable[FaceLabel]) -> CardCounts:
        """The counts of some rows."""
        out = cls()
        for r in rows:
            out.add(r)
        return out


def dataset_card(
    stats: StudyStats,
    rows: Sequence[FaceLabel] | CardCounts,
    fmt: ExportFormat,
    splits: Mapping[Split, int],
    notes: Sequence[str],
    *,
    crops_available: bool,
) -> str:
    """The README (Hugging Face dataset card) of an export: counts, label sources, agreement and licence notes.

    Args:
        stats: The study's statistics.
        rows: The faces the export holds, or their counts.
        fmt: The export's format (the editing and spreadsheet sections depend on it).
        splits: Faces per split in the export (empty: no split line).
        notes: What the export left out or assumed, one line each.
        crops_available: Whether any face crop is stored (else the card says the export holds no images).
    """
    counted = rows if isinstance(rows, CardCounts) else CardCounts.of(rows)
    lines = [
        *_head(stats, fmt, counted.n, crops_available=crops_available),
        *_counts(stats.counts, counted.n, splits),
        *_labels(stats, counted),
        *_agreement(stats),
        *_tail(fmt, sorted(counted.models), notes),
    ]
    return "\n".join(lines)


def _head(stats: StudyStats, fmt: ExportFormat, n: int, *, crops_available: bool) -> list[str]:
    """The front matter, the title and the warnings (predictions only, no crops)."""
    lines = [
        "---",
        "license: other",
        "task_categories:",
        "- image-classification",
        "tags:",
        "- facial-expression-recognition",
        "- affectlab",
        f"pretty_name: AffectLab study {stats.study!r}",
        "---",
        "",
        f"# AffectLab study `{stats.study}`",
        "",
        f"Exported {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} as `{fmt}` by `python -m db export`.",
        "",
    ]
    if stats.predictions_only:
        lines += [
            "**Predictions only: nobody has corrected this study yet, so every label below is a model prediction, "
            "not a human judgement.**",
            "",
        ]
    if n and not crops_available:
        lines += [
            "**Face crops are unavailable: none are stored (features-only privacy mode, or media ingested without "
            "crops), so this export holds no images.**",
            "",
        ]
    return lines


def _counts(c: Mapping[str, int], n: int, splits: Mapping[Split, int]) -> list[str]:
    """The counts table and the splits."""
    lines = [
        "## Counts",
        "",
        "| what | n |",
        "|---|---|",
        f"| media | {c['media']} |",
        f"| faces (in this export) | {n} |",
        f"| tracks | {c['tracks']} |",
        f"| faces corrected by people | {c['corrected_faces']} |",
        f"| annotators | {c['annotators']} |",
        f"| annotation rows (history, undos included) | {c['annotations']} |",
        f"| faces with a stored crop | {c['crops']} |",
        f"| faces with stored features | {c['features']} |",
        "",
    ]
    if splits:
        listed = ", ".join(f"{k} {v}" for k, v in splits.items())
        lines += [f"Splits (disjoint by media item, or by person track for video faces): {listed}.", ""]
    return lines


def _labels(stats: StudyStats, counted: CardCounts) -> list[str]:
    """Where the labels come from, and the counts per class."""
    n = counted.n
    src = counted.sources
    lines = ["## Label sources", "", "| label | human | model | none |", "|---|---|---|---|"]
    for f, cnt in src.items():
        lines.append(f"| {f} | {_pct(cnt['human'], n)} | {_pct(cnt['model'], n)} | {_pct(cnt['none'], n)} |")
    lines += [
        "",
        "A face's class is the annotators' majority vote where anyone labelled it (`label_source = human`), else "
        "the model's prediction (`model`). Valence, arousal and engagement are the annotators' mean where given. "
        "Each row carries `*_annotators` (how many people gave the value) and `*_agreement` (share voting for the "
        "majority class; for numbers 1 - sd / max sd), plus `model` and `weights_hash` of the prediction.",
        "",
        "## Classes",
        "",
        "| class | model | human | exported label |",
        "|---|---|---|---|",
    ]
    for k in stats.labels:
        lines.append(f"| {k} | {stats.model_counts[k]} | {stats.human_counts[k]} | {stats.label_counts[k]} |")
    return lines


def _agreement(stats: StudyStats) -> list[str]:
    """The agreement figures (none for predictions only)."""
    lines = ["", "## Agreement", ""]
    if stats.predictions_only:
        lines.append("No human labels, so no agreement figures.")
    else:
        lines.append(
            f"- model vs human majority: accuracy {_f(stats.model_accuracy)}, Cohen's kappa {_f(stats.model_kappa)}"
        )
        for pair, kappa in stats.annotator_kappa.items():
            lines.append(f"- Cohen's kappa {pair}: {_f(kappa)}")
        lines.append(
            f"- Fleiss' kappa {_f(stats.fleiss_kappa)}, Krippendorff's alpha (nominal) {_f(stats.krippendorff_alpha)}"
        )
        for f, v in stats.ccc.items():
            if v["n"]:
                lines.append(
                    f"- CCC {f}: between annotators {_f(v['annotators'])}, human vs model {_f(v['model'])} (n={v['n']})"
                )
    return lines


def _tail(fmt: ExportFormat, models: Sequence[tuple[str, str | None]], notes: Sequence[str]) -> list[str]:
    """Editing and spreadsheet notes for the formats they concern, the models' licences, the data note and the notes."""
    lines: list[str] = []
    if fmt in ("csv", "parquet"):
        lines += ["", "## Editing and importing", "", *IMPORT_NOTE]
    if fmt in ("csv", "parquet", "imagefolder", "hf"):
        lines += ["", "## Spreadsheet safety", "", CSV_NOTE]
    lines += ["", "## Models and licences", ""]
    for name, whash in models:
        spec = REGISTRY.get(name)
        licence = spec.license if spec else "not a registry checkpoint: see where its weights came from"
        lines.append(f"- `{name}` (weights git blob SHA-1 `{whash or 'unknown'}`): {licence}")
    if not models:
        lines.append("- no model predictions in this export")
    lines += ["", "## Data", "", DATA_NOTE, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {x}" for x in notes] + [""]
    return lines
