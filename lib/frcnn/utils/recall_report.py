"""Recall of proposal sources for several N (the paper's Fig. 4): computation and markdown table."""
import numpy as np

TOP_N = (100, 300, 1000, 2000)
TABLE_IOUS = (0.5, 0.6, 0.7, 0.8, 0.9)


def recall_by_n(imdb, boxes, top_n=TOP_N, area="all"):
    """imdb.evaluate_recall with limit=N for each N.

    boxes: list (imdb order) of [P, 4] boxes, best first. -> {N: result dict + 'mean_boxes'}.
    """
    out = {}
    for n in top_n:
        r = imdb.evaluate_recall(candidate_boxes=boxes, area=area, limit=n)
        r["mean_boxes"] = float(np.mean([min(len(b), n) for b in boxes[:imdb.num_images]]))
        out[n] = r
    return out


def recall_at(result, iou):
    """Recall of a result dict at one IoU (from its sorted gt_overlaps)."""
    return float((result["gt_overlaps"] >= iou - 1e-9).sum() / max(result["num_pos"], 1))


def recall_table(results):
    """results: {source: {N: result}} -> markdown table (recall at TABLE_IOUS, AR, boxes/image)."""
    head = ("| source | N | boxes/image | " + " | ".join(f"R@{t:.1f}" for t in TABLE_IOUS)
            + " | AR (0.5:0.95) |")
    lines = [head, "|" + "---|" * (4 + len(TABLE_IOUS))]
    for src, by_n in results.items():
        for n, r in by_n.items():
            vals = " | ".join(f"{recall_at(r, t):.3f}" for t in TABLE_IOUS)
            lines.append(f"| {src} | {n} | {r['mean_boxes']:.0f} | {vals} | {r['ar']:.3f} |")
    gts = {r["num_pos"] for by_n in results.values() for r in by_n.values()}
    lines.append("")
    lines.append(f"gt boxes: {', '.join(str(g) for g in sorted(gts))}; recall at IoU t counts a gt "
                 "covered by a proposal of IoU >= t under one-to-one greedy matching "
                 "(py-faster-rcnn's evaluate_recall); AR = mean recall over IoU 0.5:0.05:0.95.")
    return "\n".join(lines)
