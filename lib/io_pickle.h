/* io_pickle.h — a small, safe pickle virtual machine for what torch.save writes (protocols
 * 2-5), and a writer for the protocol-2 pickle of a plain state dict.
 *
 * The VM never executes anything: GLOBAL/STACK_GLOBAL resolve only a fixed whitelist of
 * names (collections.OrderedDict, torch._utils._rebuild_tensor_v2/_v3, _rebuild_parameter,
 * _rebuild_parameter_with_state, torch.*Storage, torch.storage.UntypedStorage, torch dtypes,
 * plus _codecs.encode and builtins set/frozenset whose results are opaque metadata) and
 * REDUCE/NEWOBJ/BINPERSID build inert values from them. All objects live in an arena owned
 * by the VM, so cyclic or shared structures are freed in one sweep. */
#ifndef RP_IO_PICKLE_H
#define RP_IO_PICKLE_H

#include "tensorfile.h"

/* Limits (each exceeded one is an E_FORMAT error that names the limit). */
#define RP_PICKLE_MAX_STACK (1u << 20)  /* values on the stack */
#define RP_PICKLE_MAX_MARKS (1u << 16)  /* nested MARKs */
#define RP_PICKLE_MAX_MEMO (1u << 22)   /* highest memo index + 1 */
#define RP_PICKLE_MAX_OBJECTS (1u << 22) /* objects created */
#define RP_PICKLE_MAX_STRING (64u << 20) /* bytes in one string */
#define RP_PICKLE_MAX_GLOBAL_LINE 256u   /* bytes in a GLOBAL module/name line */
#define RP_PICKLE_MAX_NESTING 64         /* dict nesting when flattening a state dict */

typedef enum rp_pobj_type {
    RP_PO_NONE,
    RP_PO_BOOL,
    RP_PO_INT,
    RP_PO_BIGINT, /* integer outside int64 (kept only as opaque metadata) */
    RP_PO_FLOAT,
    RP_PO_STR,
    RP_PO_BYTES,
    RP_PO_TUPLE,
    RP_PO_LIST,
    RP_PO_DICT, /* dict or OrderedDict: items in insertion order */
    RP_PO_GLOBAL,
    RP_PO_STORAGE, /* a resolved persistent id ('storage', type, key, location, numel) */
    RP_PO_TENSOR,
    RP_PO_OPAQUE /* a whitelisted non-tensor object (set, encoded bytes) */
} rp_pobj_type;

typedef enum rp_global_kind {
    RP_G_ORDERED_DICT,
    RP_G_REBUILD_TENSOR_V2,
    RP_G_REBUILD_TENSOR_V3,
    RP_G_REBUILD_PARAMETER,
    RP_G_REBUILD_PARAMETER_WITH_STATE,
    RP_G_STORAGE_TYPE,   /* torch.FloatStorage ...: dtype set */
    RP_G_UNTYPED_STORAGE,
    RP_G_DTYPE,          /* torch.float32 ...: dtype set */
    RP_G_OPAQUE_CALLABLE /* _codecs.encode, set, frozenset */
} rp_global_kind;

typedef struct rp_pobj rp_pobj;

typedef struct rp_ptensor {
    rp_pobj *storage; /* RP_PO_STORAGE */
    rp_dtype dtype;
    int ndim;
    int64_t offset; /* storage offset in elements */
    int64_t numel;
    int64_t shape[RP_MAX_DIMS];
    int64_t stride[RP_MAX_DIMS];
} rp_ptensor;

struct rp_pobj {
    rp_pobj_type type;
    union {
        int64_t i;  /* BOOL, INT */
        double f;   /* FLOAT */
        struct {
            char *p; /* NUL-terminated copy */
            size_t n;
        } s; /* STR, BYTES */
        struct {
            rp_pobj **v; /* DICT: key,value pairs flattened (n is the number of pointers) */
            size_t n, cap;
        } seq; /* TUPLE, LIST, DICT */
        struct {
            rp_global_kind kind;
            rp_dtype dtype;
            const char *name; /* static display name */
        } g;
        struct {
            rp_pobj *key; /* STR */
            rp_dtype dtype; /* element type; U8 for untyped storages */
            int untyped;
            int64_t numel;  /* elements of dtype (bytes when untyped) */
        } st;
        rp_ptensor *t;
    } u;
};

typedef struct rp_pickle_vm rp_pickle_vm;

/* Runs the pickle data[0..size) and returns its result in *root (owned by *vm_out, which
 * the caller frees with rp_pickle_free even on failure). `label` prefixes messages
 * ("model.pth: archive/data.pkl"). E_FORMAT for malformed pickles (with the byte offset),
 * E_UNSUPPORTED for valid but unsupported opcodes/globals. */
int rp_pickle_load(const unsigned char *data, size_t size, const char *label, rp_pickle_vm **vm_out,
                   rp_pobj **root, rp_err *err);
void rp_pickle_free(rp_pickle_vm *vm);

/* Short type name of an object, for messages. */
const char *rp_pobj_type_name(const rp_pobj *o);

/* ---------------------------------------------------------------------------------- */
/* Writer: a growable byte buffer and the opcodes the .pth writer needs                */
/* ---------------------------------------------------------------------------------- */

typedef struct rp_pbuf {
    unsigned char *p;
    size_t n, cap;
    int oom; /* set when a growth failed; every later append is ignored */
} rp_pbuf;

void rp_pw_bytes(rp_pbuf *b, const void *p, size_t n);
void rp_pw_op(rp_pbuf *b, unsigned char op);
void rp_pw_int(rp_pbuf *b, int64_t v);        /* BININT1/BININT2/BININT/LONG1 */
void rp_pw_str(rp_pbuf *b, const char *s);     /* BINUNICODE */
void rp_pw_global(rp_pbuf *b, const char *module, const char *name); /* GLOBAL */
void rp_pw_int_tuple(rp_pbuf *b, const int64_t *v, int n);

/* The protocol-2 pickle torch.save writes for {name: tensor, ...}: tensor i refers to the
 * storage record key "<i>". */
int rp_pickle_write_state_dict(rp_pbuf *b, const rp_named_tensor *tensors, int n, rp_err *err);

#endif
