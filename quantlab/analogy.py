"""Quantization next to the compression everybody knows: lossless codecs, entropy, JPEG.

The lesson in numbers (notebook 06):

* lossless codecs (zlib, bz2, lzma, zstd) barely shrink float weights: the low mantissa bits are noise;
* the entropy of the bytes says why, plane by plane: sign and exponent are predictable, the mantissa is not.
  For bf16 that puts the lossless floor near 1 (sign) + ~2.6 (exponent) + ~7 (mantissa) ≈ 11 bits per weight;
* quantized bytes (Q8_0, Q4_K, ...) are already near their entropy: a codec gains little more;
* JPEG, the lossy codec of images, can be pointed at a weight matrix seen as a grey image and lands on
  the same rate-distortion plane as the quantizers.

    >>> w = quantlab.data.tensors("minilm")["encoder.layer.0.output.dense.weight"]
    >>> quantlab.analogy.codec_sizes(w.tobytes())        # {'zlib': ..., 'bz2': ..., 'lzma': ..., 'zstd': ...}
    >>> quantlab.analogy.bf16_floor(w)                     # entropy terms, bits per weight
    >>> quantlab.analogy.jpeg_roundtrip(w, quality=50)     # (reconstruction, bytes)
"""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zlib

import numpy as np
import zstandard

from . import api, metrics
from .errors import FormatError, ShapeError
from .formats import _numerics as nm
from .formats import get
from .peers import ggml

__all__ = [
    "CODECS",
    "compress",
    "codec_sizes",
    "float_bytes",
    "entropy_bits",
    "byte_planes",
    "byte_plane_entropy",
    "float_fields",
    "bf16_floor",
    "jpeg_roundtrip",
    "jpeg_for_bpw",
    "roundtrip",
    "lossless_table",
    "rate_distortion",
    "tar_demo",
]


def _zstd(data: bytes, level: int) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


def _ppmd(data: bytes, order: int) -> bytes:
    # pyppmd (~40 ms): only the PPMd row of the compression lesson
    import pyppmd

    # PPMd variant H (PPMd7), the model RAR 3.x offers for text; 16 MiB of model memory
    return pyppmd.compress(data, max_order=order, mem_size=16 << 20)


#: codec name -> (compress function(bytes, level), default level). Families: zlib = deflate (LZ77 +
#: Huffman, the zip codec; RAR's main codec is the same family with a larger window), bz2 = BWT +
#: Huffman, lzma = LZ77 + range coder (7-Zip, xz), zstd = LZ77 + ANS/Huffman, ppmd = PPMd var. H
#: (context modelling + arithmetic coding; RAR 3.x's text codec, the "level" is the model order).
CODECS = {
    "zlib": (lambda b, lv: zlib.compress(b, lv), 9),
    "bz2": (lambda b, lv: bz2.compress(b, lv), 9),
    "lzma": (lambda b, lv: lzma.compress(b, preset=lv), 6),
    "zstd": (_zstd, 19),
    "ppmd": (_ppmd, 6),
}


def compress(data, codec: str, level: int | None = None) -> bytes:
    """Compress ``data`` (bytes or a numpy array's raw bytes) with one of :data:`CODECS`."""
    if codec not in CODECS:
        raise FormatError(f"unknown codec {codec!r}; available: {', '.join(CODECS)}")
    fn, default = CODECS[codec]
    b = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    return fn(b, default if level is None else level)


def codec_sizes(data, codecs=tuple(CODECS)) -> dict:
    """Compressed size in bytes per codec (default levels: zlib 9, bz2 9, lzma 6, zstd 19, ppmd order 6)."""
    return {c: len(compress(data, c)) for c in codecs}


_FLOAT_VIEWS = ("fp32", "fp16", "bf16")


def float_bytes(x, dtype: str) -> np.ndarray:
    """``x`` stored as 'fp32', 'fp16' or 'bf16', as a little-endian uint8 array (ggml's conversions)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "fp32":
        bits = a.view(np.uint32)
    elif dtype == "fp16":
        bits = nm.f16_bits(a)
    elif dtype == "bf16":
        bits = nm.bf16_bits(a)
    else:
        raise FormatError(f"float view must be one of {_FLOAT_VIEWS}, got {dtype!r}")
    return np.ascontiguousarray(bits).astype(bits.dtype.newbyteorder("<")).view(np.uint8).reshape(-1)


def float_decode(b: np.ndarray, dtype: str) -> np.ndarray:
    b = np.ascontiguousarray(b, dtype=np.uint8)
    if dtype == "fp32":
        return b.view("<f4").astype(np.float32)
    if dtype == "fp16":
        return nm.from_f16_bits(b.view("<u2"))
    if dtype == "bf16":
        return nm.from_bf16_bits(b.view("<u2"))
    raise FormatError(f"float view must be one of {_FLOAT_VIEWS}, got {dtype!r}")


def entropy_bits(symbols) -> float:
    """Shannon entropy (bits per symbol) of the empirical distribution of integer ``symbols``:
    the fewest bits per symbol any coder can reach when it codes each symbol on its own."""
    s = np.asarray(symbols).reshape(-1)
    if s.size == 0:
        return 0.0
    if s.dtype.kind in "uib" and s.min() >= 0 and s.max() < (1 << 17):
        counts = np.bincount(s.astype(np.int64))  # small non-negative symbols: count, no sort
        counts = counts[counts > 0]
    else:
        _, counts = np.unique(s, return_counts=True)
    p = counts / s.size
    return float(-(p * np.log2(p)).sum())


def byte_planes(b: np.ndarray, width: int) -> np.ndarray:
    """Split a byte stream of ``width``-byte values into ``width`` planes (row k = byte k of every value,
    little-endian: plane 0 holds the least significant byte)."""
    b = np.asarray(b, dtype=np.uint8).reshape(-1)
    if b.size % width:
        raise ShapeError(f"{b.size} bytes is not a whole number of {width}-byte values")
    return np.ascontiguousarray(b.reshape(-1, width).T)


def byte_plane_entropy(x, dtype: str) -> list[float]:
    """Entropy in bits (out of 8) of each byte plane of ``x`` stored as ``dtype``, least significant first."""
    width = 4 if dtype == "fp32" else 2
    planes = byte_planes(float_bytes(x, dtype), width)
    return [entropy_bits(p) for p in planes]


_FIELDS = {"fp32": (8, 23), "fp16": (5, 10), "bf16": (8, 7)}


def float_fields(x, dtype: str) -> dict:
    """Sign, biased exponent and mantissa fields of ``x`` stored as ``dtype`` (integer arrays)."""
    width = 32 if dtype == "fp32" else 16
    return _fields_of(float_bytes(x, dtype).view("<u4" if width == 32 else "<u2"), dtype)


def _fields_of(stored: np.ndarray, dtype: str) -> dict:
    e_bits, m_bits = _FIELDS[dtype]
    width = 32 if dtype == "fp32" else 16
    u = stored.astype(np.uint32)
    return {
        "sign": u >> (width - 1),
        "exponent": (u >> m_bits) & ((1 << e_bits) - 1),
        "mantissa": u & ((1 << m_bits) - 1),
        "exponent_bits": e_bits,
        "mantissa_bits": m_bits,
    }


def bf16_floor(x, dtype: str = "bf16") -> dict:
    """Entropy terms of ``x`` as ``dtype`` in bits per weight.

    ``whole``: entropy of the whole stored values (the order-0 lossless floor; with fewer samples than
    possible values it is an underestimate); ``sign``, ``exponent``, ``mantissa``: of each field alone;
    ``fields_sum``: their sum, the floor of a coder that codes the fields independently; ``stored``: bits
    actually stored."""
    width = 32 if dtype == "fp32" else 16
    stored = float_bytes(x, dtype).view("<u4" if width == 32 else "<u2")
    f = _fields_of(stored, dtype)
    whole = entropy_bits(stored)
    hs, he, hm = entropy_bits(f["sign"]), entropy_bits(f["exponent"]), entropy_bits(f["mantissa"])
    return {
        "dtype": dtype,
        "stored": float(width),
        "sign": hs,
        "exponent": he,
        "mantissa": hm,
        "mantissa_bits": f["mantissa_bits"],
        "fields_sum": hs + he + hm,
        "whole": whole,
        "n": int(np.size(x)),
    }


# --------------------------------------------------------------------------------------------------
# JPEG on a weight matrix
# --------------------------------------------------------------------------------------------------


def jpeg_roundtrip(w, quality: int | None = 75, clip: float | None = None):
    """Encode a 2-D weight matrix as an 8-bit grey JPEG image and decode it back.

    The weights are mapped linearly from [lo, hi] to 0..255 (lo/hi = min/max, or the ``clip``
    percentile of |w| when given), rounded, JPEG-encoded with Pillow at ``quality`` (1-100), decoded and
    mapped back. Returns ``(reconstruction float32, stored bytes)``; the stored size is the JPEG plus
    two float32 for lo and hi. ``quality=None`` skips JPEG: only the 8-bit grey image (8 bits per weight),
    the ceiling any JPEG of that image is bounded by."""
    # Pillow (~15 ms): only the JPEG lesson
    from PIL import Image

    a = np.asarray(w, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ShapeError(f"JPEG needs a non-empty 2-D matrix (an image), got shape {a.shape}")
    q = None if quality is None else int(quality)
    if q is not None and not 1 <= q <= 100:
        raise ShapeError(f"JPEG quality runs from 1 to 100, got {quality}")
    if clip is None:
        lo, hi = float(a.min()), float(a.max())
    else:
        m = float(np.percentile(np.abs(a), clip))
        lo, hi = -m, m
    span = hi - lo if hi > lo else 1.0
    img = np.clip(np.rint((a.astype(np.float64) - lo) / span * 255.0), 0, 255).astype(np.uint8)
    if q is None:
        return (img.astype(np.float64) / 255.0 * span + lo).astype(np.float32), img.size + 8
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=q)
    data = buf.getvalue()
    back = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64)
    rec = (back / 255.0 * span + lo).astype(np.float32)
    return rec, len(data) + 8


def jpeg_for_bpw(w, target_bpw: float, qualities=range(5, 101, 5), clip: float | None = None):
    """The JPEG quality whose size is closest to ``target_bpw`` bits per weight:
    ``(quality, bpw, reconstruction)``."""
    best = None
    n = np.size(w)
    for q in qualities:
        rec, nb = jpeg_roundtrip(w, q, clip=clip)
        bpw = 8.0 * nb / n
        if best is None or abs(bpw - target_bpw) < abs(best[1] - target_bpw):
            best = (q, bpw, rec)
    return best


# --------------------------------------------------------------------------------------------------
# Quantizers as points on the same plane
# --------------------------------------------------------------------------------------------------


def roundtrip(x, fmt, imatrix=None, impl: str = "fast", peer_fallback: bool = False):
    """Quantize and dequantize ``x`` with a registry format: ``(reconstruction, quantized bytes, source)``.

    ``source`` is 'quantlab'. With ``peer_fallback=True`` a format that quantlab does not implement yet is
    done by the ggml library instead (source 'ggml'); otherwise FormatError says it is not implemented."""
    f = get(fmt)
    try:
        q = api.quantize(x, f, imatrix=imatrix, impl=impl)
        return api.dequantize(q, f, impl=impl), q, "quantlab"
    except FormatError as e:
        if not (peer_fallback and "not implemented" in str(e)):
            raise

    g = ggml(required=True)
    a = np.ascontiguousarray(x, dtype=np.float32)
    rows = a.reshape(-1, a.shape[-1])
    im = None if imatrix is None or not f.uses_imatrix else np.ascontiguousarray(imatrix, dtype=np.float32)
    q = g.quantize(rows, f.id, im)
    return g.dequantize(q, f.id, rows.shape[1]).reshape(a.shape), q, "ggml"


def lossless_table(x, views=_FLOAT_VIEWS, codecs=tuple(CODECS)) -> list[dict]:
    """For each float view of ``x``: raw bits per weight, and per codec the compressed bits per weight."""
    n = np.size(x)
    rows = []
    for v in views:
        b = float_bytes(x, v)
        sizes = codec_sizes(b, codecs)
        rows.append({"view": v, "raw_bpw": 8.0 * b.size / n, **{c: 8.0 * s / n for c, s in sizes.items()}})
    return rows


def rate_distortion(
    x,
    formats=("Q8_0", "Q4_K", "Q2_K"),
    jpeg_qualities=(30, 60, 80, 90, 95, 100),
    codec: str = "zstd",
    imatrix=None,
    peer_fallback: bool = True,
    impl: str = "reference",
    jpeg_clips=(None, 99.9),
) -> list[dict]:
    """Points (method, kind, bpw, rmse, sqnr_db) for one 2-D tensor ``x``:

    * 'lossless': fp32 + codec (exact), fp16 and bf16 (rounding error) + codec;
    * 'quant': each registry format (bpw from the registry) and the same bytes + codec;
    * 'jpeg': JPEG at each quality, one series per grey range in ``jpeg_clips`` (None = min/max; a
      percentile of |x| clips the outliers, which otherwise squeeze every other weight into a few grey levels).
    Formats that cannot run (not implemented, or rows not a multiple of the block) are left out with
    a 'skipped' entry carrying the reason."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    n = a.size
    pts = []
    for v in _FLOAT_VIEWS:
        b = float_bytes(a, v)
        y = float_decode(b, v).reshape(a.shape)
        nb = len(compress(b, codec))
        pts.append(
            {
                "method": f"{v} + {codec}",
                "kind": "lossless" if v == "fp32" else "float",
                "bpw": 8.0 * nb / n,
                "rmse": metrics.rmse(a, y),
                "sqnr_db": metrics.sqnr_db(a, y),
            }
        )

    for name in formats:
        f = get(name)
        try:
            y, q, src = roundtrip(a, f, imatrix=imatrix, impl=impl, peer_fallback=peer_fallback)
        except FormatError as e:
            pts.append({"method": f.name, "kind": "skipped", "reason": str(e)})
            continue
        tag = "" if src == "quantlab" else f" (via {src})"
        common = {"rmse": metrics.rmse(a, y), "sqnr_db": metrics.sqnr_db(a, y), "source": src}
        pts.append({"method": f.name + tag, "kind": "quant", "bpw": f.bpw, **common})
        pts.append(
            {
                "method": f"{f.name} + {codec}{tag}",
                "kind": "quant+codec",
                "bpw": 8.0 * len(compress(q, codec)) / n,
                **common,
            }
        )
    for clip in jpeg_clips:
        series = "JPEG" if clip is None else f"JPEG clip {clip:g}%"
        for qual in jpeg_qualities:
            y, nb = jpeg_roundtrip(a, qual, clip=clip)
            pts.append(
                {
                    "method": f"{series} q={qual}",
                    "kind": "jpeg",
                    "series": series,
                    "quality": qual,
                    "bpw": 8.0 * nb / n,
                    "rmse": metrics.rmse(a, y),
                    "sqnr_db": metrics.sqnr_db(a, y),
                }
            )
    return pts


# --------------------------------------------------------------------------------------------------
# tar is an archive
# --------------------------------------------------------------------------------------------------


def tar_demo(files: dict) -> dict:
    """Pack ``files`` (name -> bytes) with tarfile, plain and gzip-compressed, in memory.

    Returns the payload size, the .tar size (bigger: 512-byte headers, padding to 512-byte blocks and
    to tarfile's 10240-byte records), the .tar.gz size, and whether the .tar holds the payload verbatim."""
    payload = sum(len(b) for b in files.values())
    out = {}
    for mode in ("w", "w:gz"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as t:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        out[mode] = buf.getvalue()
    raw = out["w"]
    verbatim = all(bytes(b) in raw for b in files.values())
    return {
        "payload": payload,
        "tar": len(raw),
        "tar_gz": len(out["w:gz"]),
        "tar_holds_bytes_verbatim": verbatim,
        "tar_overhead": len(raw) - payload,
    }
