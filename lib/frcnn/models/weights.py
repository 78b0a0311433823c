"""Pretrained weights: torchvision VGG16 .pth, Caffe .caffemodel, EfficientNet-Lite0, our own .pth.

Everything is first converted to a state dict in our names ("backbone.conv1_1.weight",
"rpn.rpn_conv.weight", "head.fc6.weight", ...) and then loaded into a FasterRCNN or a bare
backbone, matching shapes. Networks keep Caffe's input (BGR 0-255 minus PIXEL_MEANS):
torchvision's RGB order, 1/255 scaling and mean/std normalisation are folded into conv1_1.
"""
import os

import numpy as np
import torch

from frcnn.models.caffe_pb import read_caffemodel

CAFFE_PIXEL_MEANS = (102.9801, 115.9465, 122.7717)     # BGR
TV_MEAN = (0.485, 0.456, 0.406)                         # RGB, 0-1
TV_STD = (0.229, 0.224, 0.225)

TV_VGG16 = {0: "conv1_1", 2: "conv1_2", 5: "conv2_1", 7: "conv2_2", 10: "conv3_1", 12: "conv3_2",
            14: "conv3_3", 17: "conv4_1", 19: "conv4_2", 21: "conv4_3", 24: "conv5_1", 26: "conv5_2",
            28: "conv5_3"}

# Caffe layer names outside the shared convs (alt-opt ZF nets call the RPN conv rpn_conv1)
CAFFE_NAMES = {"rpn_conv/3x3": "rpn.rpn_conv", "rpn_conv1": "rpn.rpn_conv",
               "rpn_cls_score": "rpn.rpn_cls_score", "rpn_bbox_pred": "rpn.rpn_bbox_pred",
               "fc6": "head.fc6", "fc7": "head.fc7", "cls_score": "head.cls_score",
               "bbox_pred": "head.bbox_pred"}


def fold_input_normalization(weight, bias, pixel_means=CAFFE_PIXEL_MEANS, mean=TV_MEAN, std=TV_STD):
    """First conv of an RGB, (x/255 - mean)/std network -> the same conv on a Caffe blob.

    weight: [O, 3, k, k] over RGB inputs; bias: [O]. Returns (weight over BGR inputs, bias) such
    that conv'(bgr - pixel_means) == conv((rgb/255 - mean)/std) away from the zero padding
    (the padding is zero in each network's own input space).
    """
    weight = weight.double()
    std_t = torch.tensor(std, dtype=torch.float64)
    p_rgb = torch.tensor(np.asarray(pixel_means, dtype=np.float64).reshape(3)[::-1].copy())
    # t_c = x_c / (255 s_c) + (P_c / 255 - m_c) / s_c, x the mean-subtracted RGB input
    shift = (p_rgb / 255.0 - torch.tensor(mean, dtype=torch.float64)) / std_t
    new_b = bias.double() + (weight * shift.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
    new_w = (weight / (255.0 * std_t).view(1, 3, 1, 1)).flip(1)
    return new_w.float(), new_b.float()


def convert_torchvision_vgg16(sd, pixel_means=CAFFE_PIXEL_MEANS):
    """torchvision vgg16 state dict -> ours (backbone convs + head.fc6/fc7), conv1_1 folded."""
    out = {}
    for idx, name in TV_VGG16.items():
        out[f"backbone.{name}.weight"] = sd[f"features.{idx}.weight"]
        out[f"backbone.{name}.bias"] = sd[f"features.{idx}.bias"]
    w, b = fold_input_normalization(out["backbone.conv1_1.weight"], out["backbone.conv1_1.bias"], pixel_means)
    out["backbone.conv1_1.weight"], out["backbone.conv1_1.bias"] = w, b
    for idx, name in ((0, "fc6"), (3, "fc7")):
        if f"classifier.{idx}.weight" in sd:
            out[f"head.{name}.weight"] = sd[f"classifier.{idx}.weight"]
            out[f"head.{name}.bias"] = sd[f"classifier.{idx}.bias"]
    return out


def convert_caffemodel(path):
    """.caffemodel -> our names (layers with blobs; unknown names under "backbone.")."""
    out = {}
    for name, (_, blobs) in read_caffemodel(path).items():
        if not blobs:
            continue
        prefix = CAFFE_NAMES.get(name, "backbone." + name)
        out[prefix + ".weight"] = torch.from_numpy(blobs[0])
        if len(blobs) > 1:
            out[prefix + ".bias"] = torch.from_numpy(blobs[1])
    return out


def convert_to_state_dict(path, pixel_means=CAFFE_PIXEL_MEANS):
    """Any supported weight file -> state dict in our names (tensors in the file's shapes).

    .caffemodel: Caffe; .pth/.pt: torchvision vgg16 (features.*), EfficientNet-Lite0 (_conv_stem.*),
    a trainer snapshot ({'model': state_dict}) or our own state dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} not found (see data/README for the fetch scripts)")
    if path.endswith(".caffemodel"):
        return convert_caffemodel(path)
    from frcnn.safe_io import load_torch

    sd = load_torch(path, "weights file")
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    if "features.0.weight" in sd:
        return convert_torchvision_vgg16(sd, pixel_means)
    if "_conv_stem.weight" in sd:
        return {"backbone." + ".".join(p.lstrip("_") for p in k.split(".")): v
                for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return dict(sd)


def load_pretrained(model_or_backbone, path, pixel_means=CAFFE_PIXEL_MEANS, strict_shapes=True):
    """Load a weight file into a FasterRCNN or a bare backbone; returns a report dict
    {'loaded': [names], 'skipped': [file names not in the model], 'missing': [model names not in
    the file]}. A shape mismatch raises ValueError naming the layer (numel-equal Caffe shapes are
    reshaped); strict_shapes=False skips such entries instead.
    Loading a Caffe bbox_pred (saved un-normalised) resets the model's bbox normalisation.
    """
    src = convert_to_state_dict(path, pixel_means)
    is_backbone = not hasattr(model_or_backbone, "backbone")
    if is_backbone:
        src = {k[len("backbone."):]: v for k, v in src.items() if k.startswith("backbone.")}
    target = model_or_backbone.state_dict()
    new, skipped = {}, []
    for k, v in src.items():
        if k not in target:
            skipped.append(k)
            continue
        t = target[k]
        if tuple(v.shape) != tuple(t.shape):
            if v.numel() == t.numel() and path.endswith(".caffemodel"):
                v = v.reshape(t.shape)
            elif strict_shapes:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(t.shape)} "
                                 f"(wrong net or number of classes?)")
            else:
                skipped.append(k)
                continue
        new[k] = v.to(dtype=t.dtype)
    model_or_backbone.load_state_dict(new, strict=False)
    if (not is_backbone and path.endswith(".caffemodel") and "head.bbox_pred.weight" in new
            and getattr(model_or_backbone, "head", None) is not None):
        model_or_backbone.set_bbox_normalization(torch.zeros(4), torch.ones(4))
    missing = [k for k in target if k not in new]
    return {"loaded": sorted(new), "skipped": sorted(skipped), "missing": missing}
