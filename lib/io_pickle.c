/* io_pickle.c — safe pickle VM (the opcodes torch.save emits) and the state-dict writer. */
#include "io_pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rp_pickle_vm {
    const unsigned char *data;
    size_t size, pos, op_pos;
    unsigned char op;
    const char *label;
    rp_err *err;
    rp_pobj **objs; /* arena: every object ever created */
    size_t nobjs, objs_cap;
    rp_pobj **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t nmarks, marks_cap;
    rp_pobj **memo;
    size_t memo_cap, memo_len;
    rp_pobj *root;
};

/* ---------------------------------------------------------------------------------- */
/* Opcode names (all protocols), for messages                                          */
/* ---------------------------------------------------------------------------------- */

static const char *op_name(unsigned char op) {
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return NULL;
    }
}

const char *rp_pobj_type_name(const rp_pobj *o) {
    if (!o) return "nothing";
    switch (o->type) {
    case RP_PO_NONE: return "None";
    case RP_PO_BOOL: return "bool";
    case RP_PO_INT: return "int";
    case RP_PO_BIGINT: return "int (beyond 64 bits)";
    case RP_PO_FLOAT: return "float";
    case RP_PO_STR: return "str";
    case RP_PO_BYTES: return "bytes";
    case RP_PO_TUPLE: return "tuple";
    case RP_PO_LIST: return "list";
    case RP_PO_DICT: return "dict";
    case RP_PO_GLOBAL: return "global";
    case RP_PO_STORAGE: return "storage";
    case RP_PO_TENSOR: return "tensor";
    case RP_PO_OPAQUE: return "object";
    }
    return "?";
}

/* ---------------------------------------------------------------------------------- */
/* Errors, objects, stack                                                              */
/* ---------------------------------------------------------------------------------- */

static int vm_fail(rp_pickle_vm *vm, int code, const char *fmt, ...) RP_PRINTF(3, 4);
static int vm_fail(rp_pickle_vm *vm, int code, const char *fmt, ...) {
    char buf[RP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    const char *nm = op_name(vm->op);
    if (nm)
        return rp_fail(vm->err, code, "%s: pickle offset %zu (%s): %s", vm->label, vm->op_pos, nm,
                       buf);
    return rp_fail(vm->err, code, "%s: pickle offset %zu: %s", vm->label, vm->op_pos, buf);
}

static int grow(rp_pickle_vm *vm, void **arr, size_t *cap, size_t need, size_t elem, size_t limit,
                const char *what) {
    if (need <= *cap) return 0;
    if (need > limit)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "too many %s (limit %zu)", what, limit);
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc = nc > limit / 2 ? limit : nc * 2;
    void *p = rp_realloc_array(*arr, nc, elem);
    if (!p) return vm_fail(vm, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory (%zu %s)", nc, what);
    *arr = p;
    *cap = nc;
    return 0;
}

static void free_obj(rp_pobj *o) {
    switch (o->type) {
    case RP_PO_STR:
    case RP_PO_BYTES: free(o->u.s.p); break;
    case RP_PO_TUPLE:
    case RP_PO_LIST:
    case RP_PO_DICT: free(o->u.seq.v); break;
    case RP_PO_TENSOR: free(o->u.t); break;
    default: break;
    }
    free(o);
}

void rp_pickle_free(rp_pickle_vm *vm) {
    if (!vm) return;
    for (size_t i = 0; i < vm->nobjs; i++) free_obj(vm->objs[i]);
    free(vm->objs);
    free(vm->stack);
    free(vm->marks);
    free(vm->memo);
    free(vm);
}

static int new_obj(rp_pickle_vm *vm, rp_pobj_type t, rp_pobj **out) {
    *out = NULL;
    RP_TRY(grow(vm, (void **)&vm->objs, &vm->objs_cap, vm->nobjs + 1, sizeof *vm->objs,
                RP_PICKLE_MAX_OBJECTS, "objects"));
    rp_pobj *o = (rp_pobj *)rp_calloc(1, sizeof *o);
    if (!o) return vm_fail(vm, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    o->type = t;
    vm->objs[vm->nobjs++] = o;
    *out = o;
    return 0;
}

static size_t fence(const rp_pickle_vm *vm) { return vm->nmarks ? vm->marks[vm->nmarks - 1] : 0; }

static int push(rp_pickle_vm *vm, rp_pobj *o) {
    RP_TRY(grow(vm, (void **)&vm->stack, &vm->stack_cap, vm->sp + 1, sizeof *vm->stack,
                RP_PICKLE_MAX_STACK, "values on the pickle stack"));
    vm->stack[vm->sp++] = o;
    return 0;
}

static int pop(rp_pickle_vm *vm, rp_pobj **o) {
    if (vm->sp <= fence(vm))
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "pickle stack underflow");
    *o = vm->stack[--vm->sp];
    return 0;
}

static int top(rp_pickle_vm *vm, rp_pobj **o) {
    if (vm->sp <= fence(vm))
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "pickle stack underflow (empty stack)");
    *o = vm->stack[vm->sp - 1];
    return 0;
}

/* Items pushed since the last MARK: stack[*start .. sp). Pops the mark. */
static int pop_mark(rp_pickle_vm *vm, size_t *start) {
    if (!vm->nmarks) return vm_fail(vm, RWKVPEFT_E_FORMAT, "no MARK on the pickle stack");
    *start = vm->marks[--vm->nmarks];
    return 0;
}

static int seq_append(rp_pickle_vm *vm, rp_pobj *s, rp_pobj *item) {
    RP_TRY(grow(vm, (void **)&s->u.seq.v, &s->u.seq.cap, s->u.seq.n + 1, sizeof *s->u.seq.v,
                (size_t)RP_PICKLE_MAX_OBJECTS * 2, "container items"));
    s->u.seq.v[s->u.seq.n++] = item;
    return 0;
}

/* A new TUPLE/LIST/DICT holding items[0..n) (DICT: n must be even). */
static int make_seq(rp_pickle_vm *vm, rp_pobj_type t, rp_pobj *const *items, size_t n,
                    rp_pobj **out) {
    RP_TRY(new_obj(vm, t, out));
    if (n) {
        (*out)->u.seq.v = (rp_pobj **)rp_malloc(n * sizeof *items);
        if (!(*out)->u.seq.v) return vm_fail(vm, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
        memcpy((*out)->u.seq.v, items, n * sizeof *items);
        (*out)->u.seq.n = (*out)->u.seq.cap = n;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Reading arguments                                                                   */
/* ---------------------------------------------------------------------------------- */

static int need(rp_pickle_vm *vm, uint64_t n) {
    if (n > vm->size - vm->pos)
        return vm_fail(vm, RWKVPEFT_E_FORMAT,
                       "truncated: the argument needs %llu bytes, only %zu remain",
                       (unsigned long long)n, vm->size - vm->pos);
    return 0;
}

static uint64_t rd_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int arg_uint(rp_pickle_vm *vm, int n, uint64_t *v) {
    RP_TRY(need(vm, (uint64_t)n));
    *v = rd_le(vm->data + vm->pos, n);
    vm->pos += (size_t)n;
    return 0;
}

static int push_int(rp_pickle_vm *vm, int64_t v) {
    rp_pobj *o;
    RP_TRY(new_obj(vm, RP_PO_INT, &o));
    o->u.i = v;
    return push(vm, o);
}

static int push_bytes(rp_pickle_vm *vm, rp_pobj_type t, uint64_t len) {
    if (len > RP_PICKLE_MAX_STRING)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "string of %llu bytes exceeds the limit of %u bytes",
                       (unsigned long long)len, RP_PICKLE_MAX_STRING);
    RP_TRY(need(vm, len));
    rp_pobj *o;
    RP_TRY(new_obj(vm, t, &o));
    o->u.s.p = (char *)rp_malloc((size_t)len + 1);
    if (!o->u.s.p) return vm_fail(vm, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    memcpy(o->u.s.p, vm->data + vm->pos, (size_t)len);
    o->u.s.p[len] = 0;
    o->u.s.n = (size_t)len;
    vm->pos += (size_t)len;
    return push(vm, o);
}

/* Little-endian two's complement integer of n bytes (LONG1/LONG4). */
static int push_long(rp_pickle_vm *vm, uint64_t n) {
    if (n > RP_PICKLE_MAX_STRING)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "integer of %llu bytes exceeds the limit",
                       (unsigned long long)n);
    RP_TRY(need(vm, n));
    const unsigned char *p = vm->data + vm->pos;
    vm->pos += (size_t)n;
    if (n == 0) return push_int(vm, 0);
    int neg = (p[n - 1] & 0x80) != 0;
    /* fits in int64 when the bytes beyond the 8th are pure sign extension */
    size_t low = n < 8 ? (size_t)n : 8;
    int fits = 1;
    for (size_t i = 8; i < n; i++)
        if (p[i] != (neg ? 0xff : 0x00)) fits = 0;
    if (n > 8 && (((p[7] & 0x80) != 0) != neg)) fits = 0;
    if (!fits) {
        rp_pobj *o;
        RP_TRY(new_obj(vm, RP_PO_BIGINT, &o));
        return push(vm, o);
    }
    uint64_t u = rd_le(p, (int)low);
    if (low < 8 && neg) u |= ~(uint64_t)0 << (8 * low);
    int64_t v;
    memcpy(&v, &u, sizeof v);
    return push_int(vm, v);
}

/* ---------------------------------------------------------------------------------- */
/* Globals                                                                             */
/* ---------------------------------------------------------------------------------- */

typedef struct gdef {
    const char *module, *name, *display;
    rp_global_kind kind;
    rp_dtype dtype;
} gdef;

static const gdef GLOBALS[] = {
    {"collections", "OrderedDict", "collections.OrderedDict", RP_G_ORDERED_DICT, RP_F32},
    {"torch._utils", "_rebuild_tensor_v2", "torch._utils._rebuild_tensor_v2", RP_G_REBUILD_TENSOR_V2, RP_F32},
    {"torch._utils", "_rebuild_tensor_v3", "torch._utils._rebuild_tensor_v3", RP_G_REBUILD_TENSOR_V3, RP_F32},
    {"torch._utils", "_rebuild_parameter", "torch._utils._rebuild_parameter", RP_G_REBUILD_PARAMETER, RP_F32},
    {"torch._utils", "_rebuild_parameter_with_state", "torch._utils._rebuild_parameter_with_state",
     RP_G_REBUILD_PARAMETER_WITH_STATE, RP_F32},
    {"torch", "FloatStorage", "torch.FloatStorage", RP_G_STORAGE_TYPE, RP_F32},
    {"torch", "HalfStorage", "torch.HalfStorage", RP_G_STORAGE_TYPE, RP_F16},
    {"torch", "BFloat16Storage", "torch.BFloat16Storage", RP_G_STORAGE_TYPE, RP_BF16},
    {"torch", "DoubleStorage", "torch.DoubleStorage", RP_G_STORAGE_TYPE, RP_F64},
    {"torch", "ByteStorage", "torch.ByteStorage", RP_G_STORAGE_TYPE, RP_U8},
    {"torch", "CharStorage", "torch.CharStorage", RP_G_STORAGE_TYPE, RP_I8},
    {"torch", "ShortStorage", "torch.ShortStorage", RP_G_STORAGE_TYPE, RP_I16},
    {"torch", "IntStorage", "torch.IntStorage", RP_G_STORAGE_TYPE, RP_I32},
    {"torch", "LongStorage", "torch.LongStorage", RP_G_STORAGE_TYPE, RP_I64},
    {"torch", "BoolStorage", "torch.BoolStorage", RP_G_STORAGE_TYPE, RP_BOOL},
    {"torch.storage", "UntypedStorage", "torch.storage.UntypedStorage", RP_G_UNTYPED_STORAGE, RP_U8},
    {"torch", "UntypedStorage", "torch.UntypedStorage", RP_G_UNTYPED_STORAGE, RP_U8},
    {"torch", "float32", "torch.float32", RP_G_DTYPE, RP_F32},
    {"torch", "float", "torch.float", RP_G_DTYPE, RP_F32},
    {"torch", "float16", "torch.float16", RP_G_DTYPE, RP_F16},
    {"torch", "half", "torch.half", RP_G_DTYPE, RP_F16},
    {"torch", "bfloat16", "torch.bfloat16", RP_G_DTYPE, RP_BF16},
    {"torch", "float64", "torch.float64", RP_G_DTYPE, RP_F64},
    {"torch", "double", "torch.double", RP_G_DTYPE, RP_F64},
    {"torch", "int8", "torch.int8", RP_G_DTYPE, RP_I8},
    {"torch", "uint8", "torch.uint8", RP_G_DTYPE, RP_U8},
    {"torch", "int16", "torch.int16", RP_G_DTYPE, RP_I16},
    {"torch", "short", "torch.short", RP_G_DTYPE, RP_I16},
    {"torch", "int32", "torch.int32", RP_G_DTYPE, RP_I32},
    {"torch", "int", "torch.int", RP_G_DTYPE, RP_I32},
    {"torch", "int64", "torch.int64", RP_G_DTYPE, RP_I64},
    {"torch", "long", "torch.long", RP_G_DTYPE, RP_I64},
    {"torch", "bool", "torch.bool", RP_G_DTYPE, RP_BOOL},
    {"torch", "float8_e4m3fn", "torch.float8_e4m3fn", RP_G_DTYPE, RP_F8_E4M3},
    {"torch", "float8_e5m2", "torch.float8_e5m2", RP_G_DTYPE, RP_F8_E5M2},
    {"_codecs", "encode", "_codecs.encode", RP_G_OPAQUE_CALLABLE, RP_U8},
    {"__builtin__", "set", "builtins.set", RP_G_OPAQUE_CALLABLE, RP_U8},
    {"builtins", "set", "builtins.set", RP_G_OPAQUE_CALLABLE, RP_U8},
    {"__builtin__", "frozenset", "builtins.frozenset", RP_G_OPAQUE_CALLABLE, RP_U8},
    {"builtins", "frozenset", "builtins.frozenset", RP_G_OPAQUE_CALLABLE, RP_U8},
};

/* torch dtypes that exist but this library cannot hold. */
static const char *const UNSUPPORTED_DTYPES[] = {
    "uint16", "uint32", "uint64", "complex32", "complex64", "complex128", "cfloat", "cdouble",
    "chalf", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "bits1x8", "bits2x4", "bits4x2",
    "bits8", "bits16", "int1", "int2", "int3", "int4", "int5", "int6", "int7", "uint1",
    "uint2", "uint3", "uint4", "uint5", "uint6", "uint7",
};

static void printable(char *dst, size_t cap, const char *s, size_t n) {
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            dst[j++] = (char)c;
        } else {
            snprintf(dst + j, cap - j, "\\x%02x", c);
            j += 4;
        }
    }
    dst[j] = 0;
}

static int resolve_global(rp_pickle_vm *vm, const char *mod, size_t mlen, const char *name,
                          size_t nlen) {
    for (size_t i = 0; i < sizeof GLOBALS / sizeof GLOBALS[0]; i++) {
        const gdef *g = &GLOBALS[i];
        if (strlen(g->module) == mlen && strlen(g->name) == nlen && memcmp(g->module, mod, mlen) == 0 &&
            memcmp(g->name, name, nlen) == 0) {
            rp_pobj *o;
            RP_TRY(new_obj(vm, RP_PO_GLOBAL, &o));
            o->u.g.kind = g->kind;
            o->u.g.dtype = g->dtype;
            o->u.g.name = g->display;
            return push(vm, o);
        }
    }
    char m[2 * RP_PICKLE_MAX_GLOBAL_LINE], n[2 * RP_PICKLE_MAX_GLOBAL_LINE];
    printable(m, sizeof m, mod, mlen);
    printable(n, sizeof n, name, nlen);
    if (strcmp(m, "torch") == 0) {
        size_t l = strlen(n);
        if (l > 7 && strcmp(n + l - 7, "Storage") == 0)
            return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED,
                           "storage type torch.%s is not supported (supported: Float, Half, "
                           "BFloat16, Double, Byte, Char, Short, Int, Long, Bool)",
                           n);
        for (size_t i = 0; i < sizeof UNSUPPORTED_DTYPES / sizeof UNSUPPORTED_DTYPES[0]; i++)
            if (strcmp(n, UNSUPPORTED_DTYPES[i]) == 0)
                return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED, "tensor dtype torch.%s is not supported",
                               n);
    }
    return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED,
                   "the pickle refers to '%s.%s', which is not allowed (only tensors, "
                   "parameters and plain containers can be loaded)",
                   m, n);
}

static int read_line(rp_pickle_vm *vm, const char **s, size_t *n) {
    const unsigned char *start = vm->data + vm->pos;
    size_t left = vm->size - vm->pos;
    size_t lim = left < RP_PICKLE_MAX_GLOBAL_LINE + 1 ? left : RP_PICKLE_MAX_GLOBAL_LINE + 1;
    const unsigned char *nl = (const unsigned char *)memchr(start, '\n', lim);
    if (!nl) {
        if (lim == left)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "truncated: no newline ending the GLOBAL name");
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "GLOBAL name longer than %u bytes",
                       RP_PICKLE_MAX_GLOBAL_LINE);
    }
    *s = (const char *)start;
    *n = (size_t)(nl - start);
    vm->pos += *n + 1;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Calls: REDUCE / NEWOBJ / BINPERSID                                                   */
/* ---------------------------------------------------------------------------------- */

static int int_seq(rp_pickle_vm *vm, const rp_pobj *o, const char *what, int64_t *out, int *n) {
    if (!o || (o->type != RP_PO_TUPLE && o->type != RP_PO_LIST))
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "tensor %s must be a tuple of ints, not a %s", what,
                       rp_pobj_type_name(o));
    if (o->u.seq.n > RP_MAX_DIMS)
        return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED, "tensor with %zu dimensions (at most %d supported)",
                       o->u.seq.n, RP_MAX_DIMS);
    for (size_t i = 0; i < o->u.seq.n; i++) {
        const rp_pobj *e = o->u.seq.v[i];
        if (e->type != RP_PO_INT)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "tensor %s element %zu is a %s, not an int",
                           what, i, rp_pobj_type_name(e));
        out[i] = e->u.i;
    }
    *n = (int)o->u.seq.n;
    return 0;
}

static int rebuild_tensor(rp_pickle_vm *vm, const rp_pobj *g, const rp_pobj *args, rp_pobj **out) {
    size_t n = args->u.seq.n;
    int v3 = g->u.g.kind == RP_G_REBUILD_TENSOR_V3;
    if (v3 ? n != 7 : (n != 6 && n != 7))
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "%s takes %s arguments, got %zu", g->u.g.name,
                       v3 ? "7" : "6 or 7", n);
    rp_pobj *const *a = args->u.seq.v;
    if (a[0]->type != RP_PO_STORAGE)
        return vm_fail(vm, RWKVPEFT_E_FORMAT,
                       "%s: first argument must be a storage (persistent id), not a %s",
                       g->u.g.name, rp_pobj_type_name(a[0]));
    if (a[1]->type != RP_PO_INT)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "%s: storage offset must be an int, not a %s",
                       g->u.g.name, rp_pobj_type_name(a[1]));
    rp_ptensor *t = (rp_ptensor *)rp_calloc(1, sizeof *t);
    if (!t) return vm_fail(vm, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    int ns = 0, nst = 0, rc;
    rc = int_seq(vm, a[2], "size", t->shape, &ns);
    if (!rc) rc = int_seq(vm, a[3], "stride", t->stride, &nst);
    if (!rc && ns != nst)
        rc = vm_fail(vm, RWKVPEFT_E_FORMAT, "tensor size has %d dimensions but stride has %d", ns,
                     nst);
    const rp_pobj *st = a[0];
    if (!rc) {
        if (v3) {
            if (a[6]->type != RP_PO_GLOBAL || a[6]->u.g.kind != RP_G_DTYPE)
                rc = vm_fail(vm, RWKVPEFT_E_FORMAT, "%s: last argument must be a torch dtype, not a %s",
                             g->u.g.name, rp_pobj_type_name(a[6]));
            else
                t->dtype = a[6]->u.g.dtype;
        } else if (st->u.st.untyped) {
            rc = vm_fail(vm, RWKVPEFT_E_FORMAT,
                         "%s on an untyped storage (key '%s'): the dtype is unknown", g->u.g.name,
                         st->u.st.key->u.s.p);
        } else {
            t->dtype = st->u.st.dtype;
        }
    }
    if (rc) {
        free(t);
        return rc;
    }
    t->storage = (rp_pobj *)st;
    t->ndim = ns;
    t->offset = a[1]->u.i;
    rp_pobj *o;
    rc = new_obj(vm, RP_PO_TENSOR, &o);
    if (rc) {
        free(t);
        return rc;
    }
    o->u.t = t;
    *out = o;
    return 0;
}

static int call(rp_pickle_vm *vm, rp_pobj *fn, rp_pobj *args, int newobj, rp_pobj **out) {
    if (fn->type != RP_PO_GLOBAL)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "cannot call a %s", rp_pobj_type_name(fn));
    if (args->type != RP_PO_TUPLE)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "arguments of %s must be a tuple, not a %s",
                       fn->u.g.name, rp_pobj_type_name(args));
    size_t n = args->u.seq.n;
    rp_pobj *const *a = args->u.seq.v;
    switch (fn->u.g.kind) {
    case RP_G_ORDERED_DICT: {
        RP_TRY(new_obj(vm, RP_PO_DICT, out));
        if (n == 0) return 0;
        if (n == 1 && (a[0]->type == RP_PO_LIST || a[0]->type == RP_PO_TUPLE)) {
            for (size_t i = 0; i < a[0]->u.seq.n; i++) {
                rp_pobj *pr = a[0]->u.seq.v[i];
                if ((pr->type != RP_PO_TUPLE && pr->type != RP_PO_LIST) || pr->u.seq.n != 2)
                    return vm_fail(vm, RWKVPEFT_E_FORMAT,
                                   "OrderedDict item %zu is not a (key, value) pair", i);
                RP_TRY(seq_append(vm, *out, pr->u.seq.v[0]));
                RP_TRY(seq_append(vm, *out, pr->u.seq.v[1]));
            }
            return 0;
        }
        if (n == 1 && a[0]->type == RP_PO_DICT) {
            for (size_t i = 0; i < a[0]->u.seq.n; i++) RP_TRY(seq_append(vm, *out, a[0]->u.seq.v[i]));
            return 0;
        }
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "unexpected arguments to collections.OrderedDict");
    }
    case RP_G_OPAQUE_CALLABLE: return new_obj(vm, RP_PO_OPAQUE, out);
    default: break;
    }
    if (newobj)
        return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED, "NEWOBJ of %s is not supported", fn->u.g.name);
    switch (fn->u.g.kind) {
    case RP_G_REBUILD_TENSOR_V2:
    case RP_G_REBUILD_TENSOR_V3: return rebuild_tensor(vm, fn, args, out);
    case RP_G_REBUILD_PARAMETER:
    case RP_G_REBUILD_PARAMETER_WITH_STATE: {
        size_t want = fn->u.g.kind == RP_G_REBUILD_PARAMETER ? 3 : 4;
        if (n != want)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "%s takes %zu arguments, got %zu", fn->u.g.name,
                           want, n);
        if (a[0]->type != RP_PO_TENSOR)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "%s: data must be a tensor, not a %s",
                           fn->u.g.name, rp_pobj_type_name(a[0]));
        *out = a[0];
        return 0;
    }
    default:
        return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED,
                       "calling %s is not supported (storages come from persistent ids)",
                       fn->u.g.name);
    }
}

static int persistent_load(rp_pickle_vm *vm, rp_pobj *pid, rp_pobj **out) {
    if (pid->type != RP_PO_TUPLE || pid->u.seq.n < 1 || pid->u.seq.v[0]->type != RP_PO_STR)
        return vm_fail(vm, RWKVPEFT_E_FORMAT,
                       "persistent id must be a tuple ('storage', type, key, location, numel), "
                       "not a %s",
                       rp_pobj_type_name(pid));
    rp_pobj *const *a = pid->u.seq.v;
    if (strcmp(a[0]->u.s.p, "storage") != 0) {
        char k[64];
        printable(k, sizeof k, a[0]->u.s.p, a[0]->u.s.n < 16 ? a[0]->u.s.n : 16);
        return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED, "persistent id of kind '%s' (only 'storage')", k);
    }
    if (pid->u.seq.n != 5)
        return vm_fail(vm, RWKVPEFT_E_FORMAT,
                       "storage persistent id has %zu fields (expected 5: 'storage', type, key, "
                       "location, numel)",
                       pid->u.seq.n);
    if (a[1]->type != RP_PO_GLOBAL ||
        (a[1]->u.g.kind != RP_G_STORAGE_TYPE && a[1]->u.g.kind != RP_G_UNTYPED_STORAGE))
        return vm_fail(vm, RWKVPEFT_E_FORMAT,
                       "storage persistent id: field 1 must be a torch storage type, not %s%s",
                       a[1]->type == RP_PO_GLOBAL ? "" : "a ",
                       a[1]->type == RP_PO_GLOBAL ? a[1]->u.g.name : rp_pobj_type_name(a[1]));
    if (a[2]->type != RP_PO_STR)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "storage persistent id: key must be a str, not a %s",
                       rp_pobj_type_name(a[2]));
    if (a[3]->type != RP_PO_STR)
        return vm_fail(vm, RWKVPEFT_E_FORMAT,
                       "storage persistent id: location must be a str, not a %s",
                       rp_pobj_type_name(a[3]));
    if (a[4]->type != RP_PO_INT || a[4]->u.i < 0)
        return vm_fail(vm, RWKVPEFT_E_FORMAT,
                       "storage persistent id (key '%s'): numel must be an int >= 0", a[2]->u.s.p);
    RP_TRY(new_obj(vm, RP_PO_STORAGE, out));
    (*out)->u.st.key = a[2];
    (*out)->u.st.untyped = a[1]->u.g.kind == RP_G_UNTYPED_STORAGE;
    (*out)->u.st.dtype = a[1]->u.g.dtype;
    (*out)->u.st.numel = a[4]->u.i;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* The interpreter loop                                                                */
/* ---------------------------------------------------------------------------------- */

static int memo_put(rp_pickle_vm *vm, uint64_t idx) {
    rp_pobj *o = NULL;
    RP_TRY(top(vm, &o));
    if (idx >= RP_PICKLE_MAX_MEMO)
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "memo index %llu exceeds the limit of %u",
                       (unsigned long long)idx, RP_PICKLE_MAX_MEMO);
    size_t old = vm->memo_cap;
    RP_TRY(grow(vm, (void **)&vm->memo, &vm->memo_cap, (size_t)idx + 1, sizeof *vm->memo,
                RP_PICKLE_MAX_MEMO, "memo entries"));
    if (vm->memo_cap > old) memset(vm->memo + old, 0, (vm->memo_cap - old) * sizeof *vm->memo);
    if (!vm->memo[idx]) vm->memo_len++;
    vm->memo[idx] = o;
    return 0;
}

static int memo_get(rp_pickle_vm *vm, uint64_t idx) {
    if (idx >= vm->memo_cap || !vm->memo[idx])
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "memo index %llu was never set (BINPUT missing)",
                       (unsigned long long)idx);
    return push(vm, vm->memo[idx]);
}

static int step(rp_pickle_vm *vm, int *done) {
    uint64_t v = 0;
    rp_pobj *o = NULL, *a = NULL, *b = NULL;
    size_t start = 0;
    vm->op_pos = vm->pos;
    vm->op = vm->data[vm->pos++];
    switch (vm->op) {
    case 0x80: /* PROTO */
        RP_TRY(arg_uint(vm, 1, &v));
        if (v > 5)
            return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED, "pickle protocol %u is not supported (0-5)",
                           (unsigned)v);
        return 0;
    case 0x95: /* FRAME: framing is only a read-ahead hint */
        RP_TRY(arg_uint(vm, 8, &v));
        if (v > vm->size - vm->pos)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "frame of %llu bytes runs past the end (%zu left)",
                           (unsigned long long)v, vm->size - vm->pos);
        return 0;
    case '.': /* STOP */
        RP_TRY(pop(vm, &vm->root));
        *done = 1;
        return 0;
    case '(': /* MARK */
        RP_TRY(grow(vm, (void **)&vm->marks, &vm->marks_cap, vm->nmarks + 1, sizeof *vm->marks,
                    RP_PICKLE_MAX_MARKS, "nested MARKs"));
        vm->marks[vm->nmarks++] = vm->sp;
        return 0;
    case '0': /* POP: pops a value, or the mark when nothing is above it */
        if (vm->sp > fence(vm)) {
            vm->sp--;
            return 0;
        }
        if (vm->nmarks) {
            vm->nmarks--;
            return 0;
        }
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "pickle stack underflow");
    case '1': /* POP_MARK */
        RP_TRY(pop_mark(vm, &start));
        vm->sp = start;
        return 0;
    case '2': /* DUP */
        RP_TRY(top(vm, &o));
        return push(vm, o);
    case '}': RP_TRY(new_obj(vm, RP_PO_DICT, &o)); return push(vm, o);
    case ']': RP_TRY(new_obj(vm, RP_PO_LIST, &o)); return push(vm, o);
    case ')': RP_TRY(new_obj(vm, RP_PO_TUPLE, &o)); return push(vm, o);
    case 0x8f: RP_TRY(new_obj(vm, RP_PO_OPAQUE, &o)); return push(vm, o); /* EMPTY_SET */
    case 't':  /* TUPLE */
    case 'l':  /* LIST */
    case 'd':  /* DICT */
    case 0x91: /* FROZENSET */
        RP_TRY(pop_mark(vm, &start));
        if (vm->op == 'd' && (vm->sp - start) % 2)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "DICT with an odd number (%zu) of items",
                           vm->sp - start);
        if (vm->op == 0x91) {
            RP_TRY(new_obj(vm, RP_PO_OPAQUE, &o));
        } else {
            RP_TRY(make_seq(vm, vm->op == 't' ? RP_PO_TUPLE : vm->op == 'l' ? RP_PO_LIST : RP_PO_DICT,
                            vm->stack + start, vm->sp - start, &o));
        }
        vm->sp = start;
        return push(vm, o);
    case 0x85: /* TUPLE1..3 */
    case 0x86:
    case 0x87: {
        size_t n = (size_t)(vm->op - 0x84);
        if (vm->sp - fence(vm) < n)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "pickle stack underflow (needs %zu items)", n);
        RP_TRY(make_seq(vm, RP_PO_TUPLE, vm->stack + vm->sp - n, n, &o));
        vm->sp -= n;
        return push(vm, o);
    }
    case 's': /* SETITEM */
        RP_TRY(pop(vm, &b));
        RP_TRY(pop(vm, &a));
        RP_TRY(top(vm, &o));
        if (o->type != RP_PO_DICT)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "SETITEM on a %s (only dicts)",
                           rp_pobj_type_name(o));
        RP_TRY(seq_append(vm, o, a));
        return seq_append(vm, o, b);
    case 'u': /* SETITEMS */
        RP_TRY(pop_mark(vm, &start));
        if (start == 0 || start - 1 < fence(vm))
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "pickle stack underflow (SETITEMS needs a dict)");
        o = vm->stack[start - 1];
        if (o->type != RP_PO_DICT)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "SETITEMS on a %s (only dicts)",
                           rp_pobj_type_name(o));
        if ((vm->sp - start) % 2)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "SETITEMS with an odd number (%zu) of items",
                           vm->sp - start);
        for (size_t i = start; i < vm->sp; i++) RP_TRY(seq_append(vm, o, vm->stack[i]));
        vm->sp = start;
        return 0;
    case 'a': /* APPEND */
        RP_TRY(pop(vm, &a));
        RP_TRY(top(vm, &o));
        if (o->type != RP_PO_LIST)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "APPEND to a %s (only lists)", rp_pobj_type_name(o));
        return seq_append(vm, o, a);
    case 'e':  /* APPENDS */
    case 0x90: /* ADDITEMS */
        RP_TRY(pop_mark(vm, &start));
        if (start == 0 || start - 1 < fence(vm))
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "pickle stack underflow (%s needs a target)",
                           op_name(vm->op));
        o = vm->stack[start - 1];
        if (vm->op == 0x90) {
            if (o->type != RP_PO_OPAQUE)
                return vm_fail(vm, RWKVPEFT_E_FORMAT, "ADDITEMS to a %s (only sets)",
                               rp_pobj_type_name(o));
        } else {
            if (o->type != RP_PO_LIST)
                return vm_fail(vm, RWKVPEFT_E_FORMAT, "APPENDS to a %s (only lists)",
                               rp_pobj_type_name(o));
            for (size_t i = start; i < vm->sp; i++) RP_TRY(seq_append(vm, o, vm->stack[i]));
        }
        vm->sp = start;
        return 0;
    case 'J': { /* BININT */
        RP_TRY(arg_uint(vm, 4, &v));
        int32_t s32;
        uint32_t u32 = (uint32_t)v;
        memcpy(&s32, &u32, 4);
        return push_int(vm, s32);
    }
    case 'K': RP_TRY(arg_uint(vm, 1, &v)); return push_int(vm, (int64_t)v);
    case 'M': RP_TRY(arg_uint(vm, 2, &v)); return push_int(vm, (int64_t)v);
    case 0x8a: RP_TRY(arg_uint(vm, 1, &v)); return push_long(vm, v);
    case 0x8b: {
        RP_TRY(arg_uint(vm, 4, &v));
        if (v & 0x80000000u) return vm_fail(vm, RWKVPEFT_E_FORMAT, "negative LONG4 length");
        return push_long(vm, v);
    }
    case 'G': { /* BINFLOAT: big-endian IEEE double */
        RP_TRY(need(vm, 8));
        uint64_t u = 0;
        for (int i = 0; i < 8; i++) u = (u << 8) | vm->data[vm->pos + (size_t)i];
        vm->pos += 8;
        RP_TRY(new_obj(vm, RP_PO_FLOAT, &o));
        memcpy(&o->u.f, &u, 8);
        return push(vm, o);
    }
    case 'N': RP_TRY(new_obj(vm, RP_PO_NONE, &o)); return push(vm, o);
    case 0x88:
    case 0x89:
        RP_TRY(new_obj(vm, RP_PO_BOOL, &o));
        o->u.i = vm->op == 0x88;
        return push(vm, o);
    case 'X': RP_TRY(arg_uint(vm, 4, &v)); return push_bytes(vm, RP_PO_STR, v);
    case 0x8c: RP_TRY(arg_uint(vm, 1, &v)); return push_bytes(vm, RP_PO_STR, v);
    case 0x8d: RP_TRY(arg_uint(vm, 8, &v)); return push_bytes(vm, RP_PO_STR, v);
    case 'T':
        RP_TRY(arg_uint(vm, 4, &v));
        if (v & 0x80000000u) return vm_fail(vm, RWKVPEFT_E_FORMAT, "negative BINSTRING length");
        return push_bytes(vm, RP_PO_STR, v);
    case 'U': RP_TRY(arg_uint(vm, 1, &v)); return push_bytes(vm, RP_PO_STR, v);
    case 'B': RP_TRY(arg_uint(vm, 4, &v)); return push_bytes(vm, RP_PO_BYTES, v);
    case 'C': RP_TRY(arg_uint(vm, 1, &v)); return push_bytes(vm, RP_PO_BYTES, v);
    case 0x8e: RP_TRY(arg_uint(vm, 8, &v)); return push_bytes(vm, RP_PO_BYTES, v);
    case 'c': { /* GLOBAL */
        const char *m = NULL, *n = NULL;
        size_t ml = 0, nl = 0;
        RP_TRY(read_line(vm, &m, &ml));
        RP_TRY(read_line(vm, &n, &nl));
        return resolve_global(vm, m, ml, n, nl);
    }
    case 0x93: /* STACK_GLOBAL */
        RP_TRY(pop(vm, &b));
        RP_TRY(pop(vm, &a));
        if (a->type != RP_PO_STR || b->type != RP_PO_STR)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "STACK_GLOBAL needs two strs, got %s and %s",
                           rp_pobj_type_name(a), rp_pobj_type_name(b));
        return resolve_global(vm, a->u.s.p, a->u.s.n, b->u.s.p, b->u.s.n);
    case 'q': RP_TRY(arg_uint(vm, 1, &v)); return memo_put(vm, v);
    case 'r': RP_TRY(arg_uint(vm, 4, &v)); return memo_put(vm, v);
    case 0x94: return memo_put(vm, vm->memo_len);
    case 'h': RP_TRY(arg_uint(vm, 1, &v)); return memo_get(vm, v);
    case 'j': RP_TRY(arg_uint(vm, 4, &v)); return memo_get(vm, v);
    case 'Q': /* BINPERSID */
        RP_TRY(pop(vm, &a));
        RP_TRY(persistent_load(vm, a, &o));
        return push(vm, o);
    case 'R':  /* REDUCE */
    case 0x81: /* NEWOBJ */
        RP_TRY(pop(vm, &a));
        RP_TRY(pop(vm, &b));
        RP_TRY(call(vm, b, a, vm->op == 0x81, &o));
        return push(vm, o);
    case 'b': /* BUILD: state is metadata (e.g. OrderedDict._metadata); it is dropped */
        RP_TRY(pop(vm, &a));
        RP_TRY(top(vm, &o));
        if (o->type != RP_PO_DICT && o->type != RP_PO_TENSOR && o->type != RP_PO_OPAQUE)
            return vm_fail(vm, RWKVPEFT_E_FORMAT, "BUILD on a %s", rp_pobj_type_name(o));
        return 0;
    default: {
        const char *nm = op_name(vm->op);
        if (nm)
            return vm_fail(vm, RWKVPEFT_E_UNSUPPORTED, "pickle opcode %s (0x%02x) is not supported",
                           nm, vm->op);
        return vm_fail(vm, RWKVPEFT_E_FORMAT, "invalid pickle opcode 0x%02x", vm->op);
    }
    }
}

int rp_pickle_load(const unsigned char *data, size_t size, const char *label, rp_pickle_vm **vm_out,
                   rp_pobj **root, rp_err *err) {
    *root = NULL;
    rp_pickle_vm *vm = (rp_pickle_vm *)rp_calloc(1, sizeof *vm);
    *vm_out = vm;
    if (!vm) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
    vm->data = data;
    vm->size = size;
    vm->label = label;
    vm->err = err;
    int done = 0;
    while (!done) {
        if (vm->pos >= vm->size) {
            vm->op_pos = vm->pos;
            vm->op = 0;
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: pickle ends at offset %zu without STOP (truncated)", label,
                           vm->pos);
        }
        RP_TRY(step(vm, &done));
    }
    *root = vm->root;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Writer                                                                              */
/* ---------------------------------------------------------------------------------- */

void rp_pw_bytes(rp_pbuf *b, const void *p, size_t n) {
    if (b->oom) return;
    if (n > b->cap - b->n) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc - b->n < n) {
            if (nc > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            nc *= 2;
        }
        unsigned char *q = (unsigned char *)realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

void rp_pw_op(rp_pbuf *b, unsigned char op) { rp_pw_bytes(b, &op, 1); }

void rp_pw_int(rp_pbuf *b, int64_t v) {
    unsigned char t[10];
    if (v >= 0 && v <= 0xff) {
        t[0] = 'K';
        t[1] = (unsigned char)v;
        rp_pw_bytes(b, t, 2);
    } else if (v >= 0 && v <= 0xffff) {
        t[0] = 'M';
        t[1] = (unsigned char)v;
        t[2] = (unsigned char)(v >> 8);
        rp_pw_bytes(b, t, 3);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        uint32_t u = (uint32_t)(int32_t)v;
        t[0] = 'J';
        for (int i = 0; i < 4; i++) t[1 + i] = (unsigned char)(u >> (8 * i));
        rp_pw_bytes(b, t, 5);
    } else { /* LONG1 with the fewest bytes that keep the sign */
        uint64_t u = (uint64_t)v;
        int n = 8;
        while (n > 1) {
            unsigned char hi = (unsigned char)(u >> (8 * (n - 1)));
            unsigned char nx = (unsigned char)(u >> (8 * (n - 2)));
            if ((hi == 0 && !(nx & 0x80)) || (hi == 0xff && (nx & 0x80)))
                n--;
            else
                break;
        }
        t[0] = 0x8a;
        t[1] = (unsigned char)n;
        for (int i = 0; i < n; i++) t[2 + i] = (unsigned char)(u >> (8 * i));
        rp_pw_bytes(b, t, (size_t)n + 2);
    }
}

void rp_pw_str(rp_pbuf *b, const char *s) {
    size_t n = strlen(s);
    unsigned char t[5];
    t[0] = 'X';
    for (int i = 0; i < 4; i++) t[1 + i] = (unsigned char)((uint64_t)n >> (8 * i));
    rp_pw_bytes(b, t, 5);
    rp_pw_bytes(b, s, n);
}

void rp_pw_global(rp_pbuf *b, const char *module, const char *name) {
    rp_pw_op(b, 'c');
    rp_pw_bytes(b, module, strlen(module));
    rp_pw_op(b, '\n');
    rp_pw_bytes(b, name, strlen(name));
    rp_pw_op(b, '\n');
}

void rp_pw_int_tuple(rp_pbuf *b, const int64_t *v, int n) {
    if (n == 0) {
        rp_pw_op(b, ')');
        return;
    }
    if (n > 3) rp_pw_op(b, '(');
    for (int i = 0; i < n; i++) rp_pw_int(b, v[i]);
    rp_pw_op(b, n > 3 ? 't' : (unsigned char)(0x84 + n));
}

static const char *storage_class(rp_dtype t) {
    switch (t) {
    case RP_F32: return "FloatStorage";
    case RP_F16: return "HalfStorage";
    case RP_BF16: return "BFloat16Storage";
    case RP_F64: return "DoubleStorage";
    case RP_I8: return "CharStorage";
    case RP_U8: return "ByteStorage";
    case RP_I16: return "ShortStorage";
    case RP_I32: return "IntStorage";
    case RP_I64: return "LongStorage";
    case RP_BOOL: return "BoolStorage";
    default: return NULL;
    }
}

int rp_pickle_write_state_dict(rp_pbuf *b, const rp_named_tensor *tensors, int n, rp_err *err) {
    static const unsigned char head[] = {0x80, 2, '}'};
    rp_pw_bytes(b, head, sizeof head);
    for (int i = 0; i < n; i++) {
        const rp_named_tensor *t = &tensors[i];
        const char *sc = storage_class(t->dtype);
        int fp8 = t->dtype == RP_F8_E4M3 || t->dtype == RP_F8_E5M2;
        if (!sc && !fp8)
            return rp_fail(err, RWKVPEFT_E_UNSUPPORTED, "tensor '%s': dtype %s cannot be written",
                           t->name, rp_dtype_name(t->dtype));
        if (i % 1000 == 0) rp_pw_op(b, '(');
        rp_pw_str(b, t->name);
        rp_pw_global(b, "torch._utils", fp8 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
        rp_pw_op(b, '(');
        /* persistent id ('storage', torch.XStorage, '<i>', 'cpu', numel) */
        rp_pw_op(b, '(');
        rp_pw_str(b, "storage");
        if (fp8)
            rp_pw_global(b, "torch.storage", "UntypedStorage");
        else
            rp_pw_global(b, "torch", sc);
        char key[24];
        snprintf(key, sizeof key, "%d", i);
        rp_pw_str(b, key);
        rp_pw_str(b, "cpu");
        int64_t numel = rp_tensor_numel(t);
        rp_pw_int(b, numel); /* fp8: bytes == elements */
        rp_pw_op(b, 't');
        rp_pw_op(b, 'Q');
        rp_pw_int(b, 0);
        int64_t stride[RP_MAX_DIMS];
        int64_t acc = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            stride[d] = acc;
            acc *= t->shape[d] > 1 ? t->shape[d] : 1; /* torch's contiguous strides */
        }
        rp_pw_int_tuple(b, t->shape, t->ndim);
        rp_pw_int_tuple(b, stride, t->ndim);
        rp_pw_op(b, 0x89);
        rp_pw_global(b, "collections", "OrderedDict");
        rp_pw_op(b, ')');
        rp_pw_op(b, 'R');
        if (fp8) rp_pw_global(b, "torch", t->dtype == RP_F8_E4M3 ? "float8_e4m3fn" : "float8_e5m2");
        rp_pw_op(b, 't');
        rp_pw_op(b, 'R');
        if (i % 1000 == 999 || i == n - 1) rp_pw_op(b, 'u');
    }
    rp_pw_op(b, '.');
    if (b->oom) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory building data.pkl");
    return 0;
}
