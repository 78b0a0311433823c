"""Training data loader: an infinite, resumable, deterministic stream of minibatches.

Batch k is a function of (roidb, seed, k, rank, world_size) only: epochs are shuffled from
(seed, epoch); the global batch of ims_per_batch * world_size images is split into per-rank
slices; the scale of each image comes from (seed, k). So resuming = rebuilding with start_iter,
and worker count / timing never change the data.
"""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .image_blob import gt_mask, load_roidb_image
from frcnn.utils.blob import im_list_to_blob, prep_im_for_blob

_EPOCH_STREAM, _SCALE_STREAM = 0, 1


class BatchPlan:
    """Which roidb entries and which scales make batch k on a rank.

    Aspect grouping (as the reference): images with width >= height and the others are shuffled
    separately and cut into global batches, which are then shuffled; a group's last partial batch
    is completed cyclically from the same group so every image is seen every epoch.
    """

    def __init__(self, roidb, ims_per_batch, seed, rank=0, world_size=1, aspect_grouping=True,
                 num_scales=1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if len(roidb) == 0:
            raise ValueError("empty roidb: nothing to train on")
        self.ims, self.seed, self.rank, self.world = int(ims_per_batch), int(seed), rank, world_size
        self.g = self.ims * world_size
        self.num_scales = num_scales
        n = len(roidb)
        if aspect_grouping:
            horz = np.array([e["width"] >= e["height"] for e in roidb], bool)
            self.groups = [g for g in (np.where(horz)[0], np.where(~horz)[0]) if len(g)]
        else:
            self.groups = [np.arange(n)]
        self.batches_per_epoch = sum(-(-len(g) // self.g) for g in self.groups)
        self._cache = (None, None)

    def epoch(self, e):
        """[batches_per_epoch, G] global batches of epoch e."""
        if self._cache[0] == e:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, _EPOCH_STREAM, e])
        chunks = []
        for g in self.groups:
            p = rng.permutation(g)
            nb = -(-len(p) // self.g)
            chunks.append(np.resize(p, nb * self.g).reshape(nb, self.g))
        chunks = np.vstack(chunks)
        chunks = chunks[rng.permutation(len(chunks))]
        self._cache = (e, chunks)
        return chunks

    def batch(self, k):
        """(roidb indices [ims], scale indices [ims]) of batch k on this rank."""
        e, j = divmod(int(k), self.batches_per_epoch)
        sl = slice(self.rank * self.ims, (self.rank + 1) * self.ims)
        inds = self.epoch(e)[j][sl]
        scales = np.random.default_rng([self.seed, _SCALE_STREAM, int(k)]).integers(
            0, self.num_scales, size=self.g)[sl]
        return inds, scales


def build_batch(roidb, inds, scale_inds, cfg, with_proposals=False, iteration=0):
    """The batch dict of the given entries (see make_data_loader)."""
    ims, infos, gts, props, ids = [], [], [], [], []
    for i, si in zip(inds, scale_inds):
        e = roidb[i]
        im, scale = prep_im_for_blob(load_roidb_image(e), cfg.PIXEL_MEANS,
                                     cfg.TRAIN.SCALES[si], cfg.TRAIN.MAX_SIZE)
        ims.append(im)
        infos.append((im.shape[0], im.shape[1], scale))
        m = gt_mask(e)
        g = np.zeros((int(m.sum()), 5), np.float32)
        g[:, :4] = e["boxes"][m] * scale
        g[:, 4] = e["gt_classes"][m]
        gts.append(torch.from_numpy(g))
        if with_proposals:
            p = (e["boxes"][e["gt_classes"] == 0] * scale).astype(np.float32).reshape(-1, 4)
            props.append(torch.from_numpy(np.ascontiguousarray(p)))
        ids.append(str(e["index"]) + ("_flipped" if e.get("flipped", False) else ""))
    blob = torch.from_numpy(im_list_to_blob(ims)).permute(0, 3, 1, 2).contiguous()
    return {"images": blob, "im_info": torch.tensor(infos, dtype=torch.float32), "gt_boxes": gts,
            "proposals": props if with_proposals else None, "image_ids": ids,
            "iteration": int(iteration)}


class _Batches(Dataset):
    def __init__(self, roidb, plan, cfg, with_proposals):
        self.roidb, self.plan, self.cfg, self.with_proposals = roidb, plan, cfg, with_proposals

    def __getitem__(self, k):
        inds, scales = self.plan.batch(k)
        return build_batch(self.roidb, inds, scales, self.cfg, self.with_proposals, k)


class _From(Sampler):
    def __init__(self, start):
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1


def _no_collate(x):
    return x


def _worker_init(_):
    # Workers are the parallelism. Do NOT call cv2.setNumThreads here: after the parent used
    # cv2's pthread pool, resizing that pool in a forked child deadlocks.
    torch.set_num_threads(1)


class InfiniteLoader:
    """Iterating yields batches start_iter, start_iter + 1, ... forever (each new iter() restarts
    at start_iter)."""

    def __init__(self, roidb, plan, cfg, start_iter, num_workers, with_proposals):
        self.plan, self.start_iter, self.num_workers = plan, int(start_iter), int(num_workers)
        self.dataset = _Batches(roidb, plan, cfg, with_proposals)
        self.pin = str(cfg.DEVICE).startswith("cuda") and torch.cuda.is_available()

    @property
    def batches_per_epoch(self):
        return self.plan.batches_per_epoch

    def __iter__(self):
        if self.num_workers == 0:
            k = self.start_iter
            while True:
                yield self.dataset[k]
                k += 1
        dl = DataLoader(self.dataset, batch_size=None, sampler=_From(self.start_iter),
                        num_workers=self.num_workers, collate_fn=_no_collate,
                        pin_memory=self.pin, worker_init_fn=_worker_init,
                        prefetch_factor=2)
        yield from dl


def make_data_loader(roidb, cfg, ims_per_batch, seed, start_iter=0, num_workers=None, rank=0,
                     world_size=1, with_proposals=False):
    """Infinite iterable of training batches.

    Each batch: {'images': [B, 3, H, W] float32 (BGR minus PIXEL_MEANS, zero-padded),
    'im_info': [B, 3] float32 (h, w, scale) of each resized image, 'gt_boxes': B x [G, 5]
    (x1, y1, x2, y2, cls) in scaled coords (no difficult / crowd), 'proposals': B x [P, 4]
    scaled (rows with class 0) when with_proposals else None, 'image_ids': B x str
    ('_flipped' suffix on mirrored entries), 'iteration': k}.
    roidb entries need 'image', 'width', 'height', 'boxes', 'gt_classes' (prepare_roidb).
    """
    for e in roidb:
        if "width" not in e or "height" not in e or "image" not in e:
            raise ValueError("roidb entries need 'image', 'width' and 'height': run "
                             "frcnn.roi_data.roidb.prepare_roidb (or get_training_roidb) first")
    nw = cfg.TRAIN.NUM_WORKERS if num_workers is None else num_workers
    plan = BatchPlan(roidb, ims_per_batch, seed, rank, world_size, cfg.TRAIN.ASPECT_GROUPING,
                     len(cfg.TRAIN.SCALES))
    return InfiniteLoader(roidb, plan, cfg, start_iter, nw, with_proposals)


def loader_factory(roidb, cfg, ims_per_batch, seed, with_proposals=False, num_workers=None):
    """(start_batch) -> make_data_loader(...) for this process's rank: what train_model needs
    to (re)start the data stream at any batch."""
    from frcnn.utils import distributed as du

    def make(start_batch):
        return make_data_loader(roidb, cfg, ims_per_batch, seed, start_iter=start_batch,
                                num_workers=num_workers, rank=du.get_rank(),
                                world_size=du.get_world_size(), with_proposals=with_proposals)
    return make
