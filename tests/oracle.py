"""The ggml oracle for tests: llama.cpp's libggml-base through ctypes (see quantlab.peers).

The suite fails loudly when it is missing (OracleMissing); it never skips silently.
"""

import ctypes as C

import numpy as np

from quantlab.peers import ggml


def oracle():
    return ggml(required=True)


class GgufC:
    """llama.cpp's GGUF reader/writer (gguf.cpp, inside libggml-base: the oracle library) through ctypes."""

    def __init__(self):
        lib = oracle().lib
        self.C, self.lib = C, lib
        vp, cp = C.c_void_p, C.c_char_p
        lib.gguf_init_empty.restype = vp
        setters = {
            "u8": C.c_uint8,
            "i8": C.c_int8,
            "u16": C.c_uint16,
            "i16": C.c_int16,
            "u32": C.c_uint32,
            "i32": C.c_int32,
            "f32": C.c_float,
            "u64": C.c_uint64,
            "i64": C.c_int64,
            "f64": C.c_double,
            "bool": C.c_bool,
            "str": cp,
        }
        for k, t in setters.items():
            getattr(lib, f"gguf_set_val_{k}").argtypes = [vp, cp, t]
        lib.gguf_set_arr_data.argtypes = [vp, cp, C.c_int, vp, C.c_size_t]
        lib.gguf_set_arr_str.argtypes = [vp, cp, C.POINTER(cp), C.c_size_t]
        lib.gguf_add_tensor.argtypes = [vp, vp]
        lib.gguf_write_to_file.argtypes = [vp, cp, C.c_bool]
        lib.gguf_write_to_file.restype = C.c_bool
        lib.gguf_free.argtypes = [vp]

        class InitParams(C.Structure):
            _fields_ = [("no_alloc", C.c_bool), ("ctx", vp)]

        class GgmlParams(C.Structure):
            _fields_ = [("mem_size", C.c_size_t), ("mem_buffer", vp), ("no_alloc", C.c_bool)]

        self.InitParams, self.GgmlParams = InitParams, GgmlParams
        lib.gguf_init_from_file.argtypes = [cp, InitParams]
        lib.gguf_init_from_file.restype = vp
        lib.gguf_get_n_tensors.argtypes = [vp]
        lib.gguf_get_n_tensors.restype = C.c_int64
        lib.gguf_get_n_kv.argtypes = [vp]
        lib.gguf_get_n_kv.restype = C.c_int64
        lib.gguf_get_tensor_offset.argtypes = [vp, C.c_int64]
        lib.gguf_get_tensor_offset.restype = C.c_size_t
        lib.gguf_get_data_offset.argtypes = [vp]
        lib.gguf_get_data_offset.restype = C.c_size_t
        lib.ggml_init.argtypes = [GgmlParams]
        lib.ggml_init.restype = vp
        lib.ggml_free.argtypes = [vp]
        lib.ggml_new_tensor_2d.argtypes = [vp, C.c_int, C.c_int64, C.c_int64]
        lib.ggml_new_tensor_2d.restype = vp
        lib.ggml_set_name.argtypes = [vp, cp]
        lib.ggml_get_data.argtypes = [vp]
        lib.ggml_get_data.restype = vp

    def read(self, path):
        """(n_kv, n_tensors, data offset, tensor offsets) as llama.cpp's reader sees the file, or None."""
        ctx = self.lib.gguf_init_from_file(str(path).encode(), self.InitParams(True, None))
        if not ctx:
            return None
        try:
            n = self.lib.gguf_get_n_tensors(ctx)
            return (
                self.lib.gguf_get_n_kv(ctx),
                n,
                self.lib.gguf_get_data_offset(ctx),
                [self.lib.gguf_get_tensor_offset(ctx, i) for i in range(n)],
            )
        finally:
            self.lib.gguf_free(ctx)


class GgmlCpu:
    """ggml's CPU backend (libggml-cpu next to the oracle's libggml-base) through ctypes: builds a
    one-op graph and computes it, for ops whose numerics quantlab reproduces (flash attention)."""

    F32, F16 = 0, 1

    def __init__(self):
        import os

        base = oracle()
        d = os.path.dirname(base.path)
        C.CDLL(base.path, mode=C.RTLD_GLOBAL)
        self.base = lib = C.CDLL(base.path)
        self.cpu = cpu = C.CDLL(os.path.join(d, "libggml-cpu.so"))
        vp = C.c_void_p

        class InitParams(C.Structure):
            _fields_ = [("mem_size", C.c_size_t), ("mem_buffer", vp), ("no_alloc", C.c_bool)]

        self.InitParams = InitParams
        lib.ggml_init.argtypes = [InitParams]
        lib.ggml_init.restype = vp
        lib.ggml_free.argtypes = [vp]
        lib.ggml_new_tensor_4d.argtypes = [vp, C.c_int, C.c_int64, C.c_int64, C.c_int64, C.c_int64]
        lib.ggml_new_tensor_4d.restype = vp
        lib.ggml_get_data.argtypes = [vp]
        lib.ggml_get_data.restype = vp
        lib.ggml_nbytes.argtypes = [vp]
        lib.ggml_nbytes.restype = C.c_size_t
        lib.ggml_flash_attn_ext.argtypes = [vp, vp, vp, vp, vp, C.c_float, C.c_float, C.c_float]
        lib.ggml_flash_attn_ext.restype = vp
        lib.ggml_flash_attn_ext_set_prec.argtypes = [vp, C.c_int]
        lib.ggml_new_graph.argtypes = [vp]
        lib.ggml_new_graph.restype = vp
        lib.ggml_build_forward_expand.argtypes = [vp, vp]
        cpu.ggml_graph_compute_with_ctx.argtypes = [vp, vp, C.c_int]
        cpu.ggml_graph_compute_with_ctx.restype = C.c_int

    def _tensor(self, ctx, arr, typ, ne=None):
        """A new 4-d tensor holding ``arr`` (numpy dims reversed: arr[i3, i2, i1, i0]; ``ne`` for a
        quantized type, whose rows are bytes)."""
        a = np.ascontiguousarray(arr)
        ne = list(ne or a.shape[::-1]) + [1] * (4 - len(ne or a.shape))
        t = self.base.ggml_new_tensor_4d(ctx, typ, *ne)
        C.memmove(self.base.ggml_get_data(t), a.ctypes.data, a.nbytes)
        return t

    def compute(self, build, inputs, out_shape, threads=1, nbytes=64 << 20):
        """Compute one ggml graph: ``inputs`` is a list of (numpy array, ggml type id[, ne]) made into
        tensors (numpy dims reversed), ``build(lib, ctx, tensors)`` returns the result tensor, read back as
        float32 ``out_shape``."""
        need = sum(spec[0].nbytes for spec in inputs) + 4 * int(np.prod(out_shape)) + nbytes
        ctx = self.base.ggml_init(self.InitParams(need, None, False))
        try:
            ts = [self._tensor(ctx, *spec) for spec in inputs]
            out = build(self.base, ctx, ts)
            gf = self.base.ggml_new_graph(ctx)
            self.base.ggml_build_forward_expand(gf, out)
            if self.cpu.ggml_graph_compute_with_ctx(ctx, gf, threads) != 0:
                raise RuntimeError("ggml_graph_compute_with_ctx failed")
            res = np.empty(out_shape, dtype=np.float32)
            C.memmove(res.ctypes.data, self.base.ggml_get_data(out), res.nbytes)
            return res
        finally:
            self.base.ggml_free(ctx)

    def flash_attn_ext(self, q, k, v, mask, scale, softcap=0.0, threads=1):
        """ggml_flash_attn_ext (prec F32, as llama.cpp sets it) of q float32 [H, N, D] over the fp16 bit
        patterns k, v uint16 [Hkv, n_kv, D] with mask float16 [N, n_kv] -> float32 [N, H, D]."""
        H, N, D = q.shape
        need = q.nbytes + k.nbytes + v.nbytes + mask.nbytes + N * H * D * 4 + (64 << 20)
        ctx = self.base.ggml_init(self.InitParams(need, None, False))
        try:
            tq = self._tensor(ctx, q.astype(np.float32), self.F32)
            tk = self._tensor(ctx, k.astype(np.uint16), self.F16)
            tv = self._tensor(ctx, v.astype(np.uint16), self.F16)
            tm = self._tensor(ctx, mask.astype(np.float16), self.F16)
            out = self.base.ggml_flash_attn_ext(ctx, tq, tk, tv, tm, scale, 0.0, softcap)
            self.base.ggml_flash_attn_ext_set_prec(out, 10)  # GGML_PREC_F32
            gf = self.base.ggml_new_graph(ctx)
            self.base.ggml_build_forward_expand(gf, out)
            if self.cpu.ggml_graph_compute_with_ctx(ctx, gf, threads) != 0:
                raise RuntimeError("ggml_graph_compute_with_ctx failed")
            res = np.empty((N, H, D), dtype=np.float32)
            C.memmove(res.ctypes.data, self.base.ggml_get_data(out), res.nbytes)
            return res
        finally:
            self.base.ggml_free(ctx)
