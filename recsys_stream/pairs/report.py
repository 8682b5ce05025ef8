"""The report of a product-pair dataset: its stages, runs, settings and three figures.

The report names the raw file it is about, tabulates the stages, the runs'
results and each run's settings (what differs from the defaults), and shows
three figures (:mod:`recsys_stream.pairs.figures`), each with a line saying
what to look for: learning curves (validation AUC and training loss against
step, epoch boundaries and the popularity baseline marked), precision and
recall against threshold (the reference's "cliff" figures), and the ROC
curves with popularity's. :func:`recsys_stream.report.report` writes it.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from pipeline.contracts import PAIRS_STATS, PARSE_STATS, SPLIT_STATS, WALKS_STATS
from recsys_stream.core.config import MODEL_DEFAULTS, TrainConfig
from recsys_stream.pairs.figures import MIN_PREDICTED, learning_curves, precision_recall, roc
from recsys_stream.report import FIGURES, fmt, left_out_lines, save, stage_table, stats_of

PROTOCOLS = {
    "products": "drawn from the distinct val products, each equally likely (the reference "
    "article's protocol): popularity alone tells many of them from true pairs",
    "occurrences": "drawn from the val products in proportion to how often they occur in "
    "val pairs, so they share the positives' popularity: popularity alone scores about 0.5, "
    "and only what a model knows beyond popularity counts",
}


def pair_report(
    data_dir: Path, variants: dict[str, dict], figures: Path, left_out: list[str]
) -> list[str]:
    """The report's lines for the runs ``variants`` (and the notes ``left_out``); its
    figures saved into ``figures``."""
    sections = [
        (
            "Learning curves",
            learning_curves(variants),
            "learning_curves.png",
            "Validation ROC-AUC on a fixed sample of val pairs (solid: all, dashed: pairs whose "
            "products are both in train) and training loss, ten points an epoch from the "
            "untrained model at step 0. Look for the curves rising above the popularity line "
            "and flattening by the last epoch; a curve still climbing wants more epochs, one "
            "that falls late overfits.",
        ),
        (
            "Precision and recall against threshold",
            precision_recall(variants),
            "precision_recall.png",
            "Predicting a pair when the model's probability is at least the threshold. "
            f"Thresholds that predict fewer than {MIN_PREDICTED} pairs are left out (their "
            "precision is noise). Look for where precision meets recall (marked): MF without "
            "bias piles its scores near 0.5, the cliff the article describes, where precision "
            "and recall change all at once.",
        ),
        (
            "ROC curves",
            roc(variants),
            "roc.png",
            "True against false positive rate over all val pairs, with the popularity "
            "baseline. The further a curve bows towards the top left, the better; under the "
            "`products` protocol popularity alone bows far.",
        ),
    ]
    lines = [*_header(data_dir), "", "## Stages", "", *_stage_table(data_dir)]
    lines += left_out_lines(left_out)
    lines += ["", "## Models", "", *_variant_table(variants), "", *_protocol_note(variants)]
    lines += ["", "## Settings", "", *_settings_table(variants)]
    for title, figure, name, caption in sections:
        save(figure, figures / name)
        lines += ["", f"## {title}", "", f"![{title}]({FIGURES}/{name})", "", caption]
    return lines


def _header(data_dir: Path) -> list[str]:
    """The title: which raw file the report is about, and when it was made."""
    parse = stats_of(data_dir / PARSE_STATS)
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = [f"# {data_dir.name}: recsys-stream report", ""]
    if parse.get("raw"):
        size = parse.get("raw_bytes")
        digest = parse.get("raw_sha256", "")[:12]
        lines.append(
            f"Raw file `{parse['raw']}` ({fmt(size)} bytes, SHA-256 {digest or '–'}…, "
            f"format {parse.get('format', '–')}). Report made {made}."
        )
    else:
        lines.append(f"No parse.json in {data_dir}: the raw file is unknown. Report made {made}.")
    return lines


def _stage_table(data_dir: Path) -> list[str]:
    parse, pairs, split = (stats_of(data_dir / n) for n in (PARSE_STATS, PAIRS_STATS, SPLIT_STATS))
    rows = [
        (
            "parse",
            f"{fmt(parse.get('lines'))} lines → {fmt(parse.get('products'))} products, "
            f"{fmt(parse.get('duplicates'))} duplicates, {fmt(parse.get('rejected'))} rejected",
            parse,
        ),
        (
            "pairs",
            f"{fmt(pairs.get('pairs'))} pairs over a vocabulary of {fmt(pairs.get('vocabulary'))}",
            pairs,
        ),
        (
            "split",
            f"{fmt(split.get('train'))} train, {fmt(split.get('val_positives'))} val "
            f"positives + {fmt(split.get('val_negatives'))} negatives "
            f"(`{split.get('negatives', '–')}` protocol)",
            split,
        ),
    ]
    walked = stats_of(data_dir / WALKS_STATS)
    if walked:  # made only for skip-gram
        kind = "weighted" if walked.get("weighted") else "uniform"
        text = (
            f"{fmt(walked.get('walks'))} {kind} walks of {walked.get('length')}, "
            f"{fmt(walked.get('steps'))} steps"
        )
        rows.append(("walks", text, walked))
    return stage_table(rows)


def _variant_table(variants: dict[str, dict]) -> list[str]:
    table = [
        "| run | AUC all | AUC seen | AUC cold | PR-AUC | popularity AUC all "
        "| popularity AUC seen | popularity AUC cold | epochs | seconds | samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in variants.items():
        s = run["summary"]
        parts = s.get("parts", 1)
        seconds = fmt(s["seconds"], 1) + (f" ({parts} parts)" if parts > 1 else "")
        table.append(
            f"| {name} | {fmt(s['auc_all'])} | {fmt(s['auc_seen'])} | "
            f"{fmt(s.get('auc_cold'))} | {fmt(s['pr_auc'])} | {fmt(s['popularity_auc'])} | "
            f"{fmt(s['popularity_auc_seen'])} | {fmt(s.get('popularity_auc_cold'))} | "
            f"{s['epochs']} | {seconds} | {fmt(s['samples_per_s'])} |"
        )
    return table


def _protocol_note(variants: dict[str, dict]) -> list[str]:
    """What the AUCs are over, and how the val negatives were drawn."""
    protocols = sorted(
        {r["summary"].get("negative_protocol", "unrecorded") for r in variants.values()}
    )
    described = "; ".join(
        f"`{p}`: {PROTOCOLS.get(p, 'not recorded in val.parquet')}" for p in protocols
    )
    return [
        "AUC over all validation pairs, over the *seen* ones (both products in train) and "
        "the *cold* ones (at least one product without a train pair, which a model knows "
        "only through side information); "
        "popularity scores a pair by the product of the two train degrees. A resumed run's "
        f"seconds add up its parts. Validation negatives ({described}).",
    ]


# Defaults whose value alone would not say what they do (config.batch_for).
SHOWN = {"batch_size": "0 (chosen from the train pairs: up to 2048)"}


def _settings_table(variants: dict[str, dict]) -> list[str]:
    """Per run: its config where it differs from its model's defaults, its protocol and
    seed; then the defaults, the fields' and each model's own."""
    table = ["| run | settings other than the defaults | protocol | seed |", "|---|---|---|---:|"]
    for name, run in variants.items():
        config = run["summary"]["config"]
        defaults = TrainConfig.defaults("pairs", model=config["model"]).to_dict()
        defaults["model"] = TrainConfig.model  # a model other than the default is named
        changed = [
            f"{key.replace('_', '-')} {value}"
            for key, value in config.items()
            if key != "seed" and key in defaults and value != defaults[key]
        ]
        table.append(
            f"| {name} | {', '.join(changed) or 'none'} | "
            f"{run['summary'].get('negative_protocol', '–')} | {config.get('seed', '–')} |"
        )
    defaults_text = ", ".join(  # the options of product pairs (each field's kinds)
        f"{f.name.replace('_', '-')} {SHOWN.get(f.name, str(f.default)) or 'none'}"
        for f in dataclasses.fields(TrainConfig)
        if "pairs" in f.metadata["kinds"]
        and f.name not in ("eval_sample", "workers", "shuffle_groups")
    )
    own = "; ".join(
        f"{model}: "
        + ", ".join(f"{key.replace('_', '-')} {value}" for key, value in values.items())
        for model, values in MODEL_DEFAULTS["pairs"].items()
    )
    return [*table, "", f"Defaults: {defaults_text}.", "", f"Models' own defaults: {own}."]
