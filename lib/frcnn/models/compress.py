"""Truncated SVD of the head's fc6/fc7 (Fast R-CNN, section 3.1; py-faster-rcnn's compress_net).

W [out, in] ~ U_k diag(s_k) V_k: the layer becomes L = diag(s_k) V_k [k, in] (no bias), then
U = U_k [out, k] with the original bias. Parameters out*in -> k*(in + out). The reference keeps
1024 (fc6) and 256 (fc7) of VGG16's 4096: DEFAULT_FRACTIONS gives the same for 4096-wide layers
and scales with the width for the other nets.
"""
import torch
from torch import nn

DEFAULT_FRACTIONS = {"fc6": 1 / 4, "fc7": 1 / 16}  # 4096 -> 1024 / 256, as the reference


class SVDLinear(nn.Module):
    """y = U(L(x)): a rank-k factorisation of an nn.Linear (in_features -> out_features)."""

    def __init__(self, in_features, out_features, k):
        super().__init__()
        self.L = nn.Linear(in_features, k, bias=False)
        self.U = nn.Linear(k, out_features)
        self.in_features, self.out_features, self.k = in_features, out_features, k

    def forward(self, x):
        return self.U(self.L(x))

    @classmethod
    def from_linear(cls, lin, k):
        """The best rank-k approximation (Frobenius) of lin's weight, lin's bias kept."""
        W = lin.weight.detach().double()
        k = int(min(k, *W.shape))
        U, s, Vh = torch.linalg.svd(W, full_matrices=False)
        m = cls(lin.in_features, lin.out_features, k)
        with torch.no_grad():
            m.L.weight.copy_((s[:k, None] * Vh[:k]).to(lin.weight.dtype))
            m.U.weight.copy_(U[:, :k].to(lin.weight.dtype))
            m.U.bias.copy_(lin.bias.detach())
        return m.to(lin.weight.device)


def default_ranks(model):
    """{'fc6': k, 'fc7': k} from DEFAULT_FRACTIONS and the head's layer widths."""
    return {n: max(1, round(getattr(model.head, n).out_features * f))
            for n, f in DEFAULT_FRACTIONS.items()}


def compress_head(model, ranks):
    """Replace model.head.fc6/fc7 (nn.Linear) by their rank-k SVDLinear in place.

    ranks: {'fc6': k or None, 'fc7': k or None} (None/0: leave the layer). -> ranks applied."""
    done = {}
    for name, k in ranks.items():
        if not k:
            continue
        lin = getattr(model.head, name, None)
        if not isinstance(lin, nn.Linear):
            raise TypeError(f"model.head.{name} is {type(lin).__name__}, not an nn.Linear: "
                            "already compressed?")
        setattr(model.head, name, SVDLinear.from_linear(lin, k))
        done[name] = getattr(model.head, name).k
    return done


def svd_structure(model, ranks):
    """Give model.head the SVDLinear layers of `ranks` (zero weights) so a compressed state dict
    loads (test_net does this for .pth files with an 'svd' entry)."""
    for name, k in ranks.items():
        lin = getattr(model.head, name)
        if isinstance(lin, nn.Linear):
            setattr(model.head, name, SVDLinear(lin.in_features, lin.out_features, k).to(
                lin.weight.device))
    return model


def head_params(model):
    return sum(p.numel() for p in model.head.parameters())
