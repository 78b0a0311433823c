# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Box overlaps (IoU) in Cython, float64, with the py-faster-rcnn +1 pixel convention by default."""
import numpy as np


def bbox_overlaps(boxes, query_boxes, offset=1):
    """IoU of every box with every query box.

    boxes: [N, 4] float64, (x1, y1, x2, y2) in pixels
    query_boxes: [K, 4] float64
    offset: 1 (w = x2 - x1 + 1, py-faster-rcnn) or 0 (continuous coordinates)
    returns: [N, K] float64; 0 where the boxes do not overlap (or the union is <= 0).
    """
    b = np.ascontiguousarray(boxes, dtype=np.float64)
    q = np.ascontiguousarray(query_boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or q.ndim != 2 or q.shape[1] != 4:
        raise ValueError(f"bbox_overlaps: boxes and query_boxes must be [N, 4] and [K, 4], "
                         f"got {b.shape} and {q.shape}")
    out = np.zeros((b.shape[0], q.shape[0]), dtype=np.float64)
    if b.shape[0] and q.shape[0]:
        off = float(offset)
        q_area = (q[:, 2] - q[:, 0] + off) * (q[:, 3] - q[:, 1] + off)
        _overlaps(b, q, q_area, out, off)
    return out


cdef void _overlaps(const double[:, ::1] b, const double[:, ::1] q, const double[::1] q_area,
                    double[:, ::1] out, double off) noexcept nogil:
    cdef Py_ssize_t N = b.shape[0], K = q.shape[0], n, k
    cdef double iw, ih, ua, bx1, by1, bx2, by2, b_area
    # Row-major over the output: writes are contiguous, query boxes (few) stay in cache.
    for n in range(N):
        bx1 = b[n, 0]
        by1 = b[n, 1]
        bx2 = b[n, 2]
        by2 = b[n, 3]
        b_area = (bx2 - bx1 + off) * (by2 - by1 + off)
        for k in range(K):
            iw = min(bx2, q[k, 2]) - max(bx1, q[k, 0]) + off
            if iw > 0:  # early exit: most pairs do not overlap
                ih = min(by2, q[k, 3]) - max(by1, q[k, 1]) + off
                if ih > 0:
                    ua = b_area + q_area[k] - iw * ih
                    if ua > 0:
                        out[n, k] = iw * ih / ua
