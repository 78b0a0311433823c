"""A minimal reader of Caffe .caffemodel files (protobuf wire format), no caffe/protobuf install.

Field numbers from caffe.proto: NetParameter.layer = 100 (LayerParameter: name 1, type 2,
blobs 7) and the legacy NetParameter.layers = 2 (V1LayerParameter: name 4, type 5 (enum),
blobs 6). BlobProto: num/channels/height/width 1..4 (legacy shape), data 5 (float, packed),
shape 7 (BlobShape: dim 1, int64), double_data 8. Everything else is skipped.
"""
import mmap
from collections import OrderedDict

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def read_varint(buf, pos):
    """-> (value, new pos)."""
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError(f"corrupt varint at byte {pos}")


def iter_fields(buf, start, end):
    """Yield (field number, wire type, value) over a message in buf[start:end]; LEN values are
    (offset, length), I32/I64 values (offset, size), VARINT values ints."""
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == VARINT:
            val, pos = read_varint(buf, pos)
        elif wt == LEN:
            n, pos = read_varint(buf, pos)
            val = (pos, n)
            pos += n
        elif wt == I32:
            val = (pos, 4)
            pos += 4
        elif wt == I64:
            val = (pos, 8)
            pos += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wt} (field {field}) at byte {pos}")
        if pos > end:
            raise ValueError("truncated protobuf message (is this a .caffemodel?)")
        yield field, wt, val


def _packed_varints(buf, off, n):
    out, pos = [], off
    while pos < off + n:
        v, pos = read_varint(buf, pos)
        out.append(v)
    return out


def parse_blob(buf, start, end):
    """BlobProto -> float32 ndarray in its Caffe shape (legacy 4-d shape when `shape` is absent)."""
    legacy = {}
    dims = None
    chunks, dchunks, single, dsingle = [], [], [], []
    for field, wt, val in iter_fields(buf, start, end):
        if field in (1, 2, 3, 4) and wt == VARINT:
            legacy[field] = val
        elif field == 7 and wt == LEN:
            dims = []
            for f2, wt2, v2 in iter_fields(buf, val[0], val[0] + val[1]):
                if f2 == 1:
                    dims.extend(_packed_varints(buf, *v2) if wt2 == LEN else [v2])
        elif field == 5:
            if wt == LEN:
                chunks.append(np.frombuffer(buf, dtype="<f4", count=val[1] // 4, offset=val[0]))
            else:
                single.append(np.frombuffer(buf, dtype="<f4", count=1, offset=val[0]))
        elif field == 8:
            if wt == LEN:
                dchunks.append(np.frombuffer(buf, dtype="<f8", count=val[1] // 8, offset=val[0]))
            else:
                dsingle.append(np.frombuffer(buf, dtype="<f8", count=1, offset=val[0]))
    parts = chunks + single or [c.astype(np.float32) for c in dchunks + dsingle]
    data = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if dims is None:
        dims = [legacy.get(i, 1) for i in (1, 2, 3, 4)] if legacy else [data.size]
    if int(np.prod(dims)) != data.size:
        raise ValueError(f"blob shape {dims} does not match its {data.size} values")
    return data.reshape(dims)


def _parse_layer(buf, start, end, legacy):
    name_f, type_f, blobs_f = (4, 5, 6) if legacy else (1, 2, 7)
    name, ltype, blobs = None, None, []
    for field, wt, val in iter_fields(buf, start, end):
        if field == name_f and wt == LEN:
            name = bytes(buf[val[0]:val[0] + val[1]]).decode("utf-8")
        elif field == type_f:
            ltype = val if wt == VARINT else bytes(buf[val[0]:val[0] + val[1]]).decode("utf-8")
        elif field == blobs_f and wt == LEN:
            blobs.append(parse_blob(buf, val[0], val[0] + val[1]))
    return name, ltype, blobs


def parse_net(buf):
    """NetParameter bytes -> OrderedDict layer name -> (type, [blobs as float32 ndarrays]).

    Layers without blobs are kept with an empty list; a name seen twice keeps the later one.
    """
    layers = OrderedDict()
    for field, wt, val in iter_fields(buf, 0, len(buf)):
        if wt == LEN and field in (100, 2):
            name, ltype, blobs = _parse_layer(buf, val[0], val[0] + val[1], legacy=field == 2)
            if name is not None:
                layers[name] = (ltype, blobs)
    return layers


def read_caffemodel(path):
    """Read a .caffemodel file -> OrderedDict name -> (type, [float32 ndarrays])."""
    with open(path, "rb") as f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            raise ValueError(f"{path}: empty file, not a caffemodel") from None
    try:
        return parse_net(mm)   # blobs are copies (np.concatenate), so the map can close
    except (ValueError, IndexError) as e:
        raise ValueError(f"{path}: not a readable caffemodel ({e})") from None
    finally:
        mm.close()
