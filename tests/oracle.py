"""The ggml oracle for tests: llama.cpp's libggml-base through ctypes (see quantlab.peers).

The suite fails loudly when it is missing (OracleMissing); it never skips silently.
"""

import ctypes as C

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
