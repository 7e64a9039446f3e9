"""The headline metrics of a metrics.json as display rows {metric, value, floor}: the model card's table (export)
and the Prefect metrics table and report (the flow). Torch-free: a flow run that ran nothing can still show them."""

from __future__ import annotations

from gan.core import metric_keys as keys


def summary_rows(m: dict) -> list[dict]:
    """The headline metrics as rows {metric, value, floor}: for the model card and the Prefect table."""

    def fmt(key: str) -> str:
        v = m.get(key)
        if v is None:
            return "—"
        if keys.std(key) in m:
            return f"{v:.4g} ± {m[keys.std(key)]:.2g}"
        if keys.ci95(key) in m:
            lo, hi = m[keys.ci95(key)]
            return f"{v:.4g} [{lo:.4g}, {hi:.4g}]"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    rows = []
    for name in ("classifier", "judge", "inception"):
        if keys.fid(name) not in m:
            continue
        score = "IS" if name == "inception" else "classifier score"
        labels = ((keys.FID, "FID"), (keys.KID, "KID"), (keys.IS, score), *((p, p) for p in keys.PRDC))
        for kind, label in labels:
            key = keys.metric(kind, name)
            if key in m:
                rows.append({"metric": f"{label} ({name})", "value": fmt(key), "floor": fmt(keys.floor(key))})
    judge = keys.MEMORISATION_EXTRACTOR
    ct, fraction = keys.copy_ct(judge), keys.copy_fraction(judge)
    if ct in m:
        rows += [
            {"metric": f"data-copying C_T ({judge}; << 0: copying)", "value": fmt(ct), "floor": fmt(keys.floor(ct))},
            {"metric": f"likely copies ({judge})", "value": f"{m[fraction]:.2%}",
             "floor": f"{m[keys.floor(fraction)]:.2%}"},
        ]  # fmt: skip
    if "classes_covered" in m:
        k = m["num_classes"]
        rows += [
            {"metric": "classes covered", "value": f"{m['classes_covered']}/{k}",
             "floor": f"{m['classes_covered_floor']}/{k}"},
            {"metric": "KL(class histogram ‖ real)", "value": fmt("class_kl"), "floor": fmt("class_kl_floor")},
            {"metric": "mean classifier confidence", "value": fmt("mean_confidence"),
             "floor": fmt("mean_confidence_floor")},
        ]  # fmt: skip
    if "conditional_accuracy" in m:
        rows.append({"metric": "requested class recognised (conditional G)",
                     "value": f"{m['conditional_accuracy']:.1%}",
                     "floor": f"{m['classifier_test_accuracy']:.1%} (classifier accuracy)"})  # fmt: skip
    return rows
