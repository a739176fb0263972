/* common.c — error records, dtype helpers, checked allocation, whole-file images. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* pread, O_CLOEXEC */
#endif
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char tls_last_error[RP_ERR_MSG_MAX];

const char *rwkvpeft_last_error(void) { return tls_last_error; }

int rp_fail(rp_err *err, int code, const char *fmt, ...) {
    char buf[RP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(tls_last_error, buf, sizeof buf);
    if (err) {
        err->code = code;
        memcpy(err->msg, buf, sizeof buf);
    }
    return code;
}

int rp_fail_prefix(rp_err *err, const char *fmt, ...) {
    char pre[RP_ERR_MSG_MAX], buf[2 * RP_ERR_MSG_MAX + 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    const char *old = err ? err->msg : tls_last_error;
    snprintf(buf, sizeof buf, "%s: %s", pre, old);
    buf[RP_ERR_MSG_MAX - 1] = 0; /* keep the head of the message */
    memcpy(tls_last_error, buf, RP_ERR_MSG_MAX);
    if (err) {
        memcpy(err->msg, buf, RP_ERR_MSG_MAX);
        return err->code;
    }
    return RWKVPEFT_E_INTERNAL;
}

int rp_err_copy(rp_err *dst, const rp_err *src) {
    if (dst && dst != src)
        *dst = *src;
    memcpy(tls_last_error, src->msg, sizeof tls_last_error);
    return src->code;
}

void rp_err_clear(rp_err *err) {
    if (err) {
        err->code = 0;
        err->msg[0] = 0;
    }
}

const char *rwkvpeft_status_string(rwkvpeft_status s) {
    switch (s) {
    case RWKVPEFT_OK: return "ok";
    case RWKVPEFT_E_INVALID_ARGUMENT: return "invalid argument";
    case RWKVPEFT_E_OUT_OF_MEMORY: return "out of memory";
    case RWKVPEFT_E_IO: return "i/o error";
    case RWKVPEFT_E_FORMAT: return "malformed file";
    case RWKVPEFT_E_SHAPE: return "shape mismatch";
    case RWKVPEFT_E_UNSUPPORTED: return "unsupported";
    case RWKVPEFT_E_BACKEND: return "backend error";
    case RWKVPEFT_E_NUMERIC: return "non-finite value";
    case RWKVPEFT_E_STATE: return "invalid call order";
    case RWKVPEFT_E_INTERNAL: return "internal error";
    }
    return "unknown status";
}

size_t rp_dtype_size(rp_dtype t) {
    switch (t) {
    case RP_F64: case RP_I64: return 8;
    case RP_F32: case RP_I32: return 4;
    case RP_F16: case RP_BF16: case RP_I16: return 2;
    case RP_I8: case RP_U8: case RP_BOOL: case RP_F8_E4M3: case RP_F8_E5M2: return 1;
    default: return 0;
    }
}

const char *rp_dtype_name(rp_dtype t) {
    static const char *names[RP_DTYPE_COUNT] = {"float32", "float16", "bfloat16", "float64",
                                                 "int8",    "uint8",   "int16",    "int32",
                                                 "int64",   "bool",    "float8_e4m3fn", "float8_e5m2"};
    return (unsigned)t < RP_DTYPE_COUNT ? names[t] : "unknown";
}

float rp_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t rp_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float rp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t rp_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (absu < 0x38800000u) { /* subnormal or zero in f16 */
        float a;
        memcpy(&a, &absu, 4);
        /* scale to units of 2^-24 and round to nearest even */
        float scaled = a * 16777216.0f;
        uint32_t m = (uint32_t)nearbyintf(scaled);
        return (uint16_t)(sign | m);
    }
    uint32_t e = (absu >> 23) - 127 + 15;
    uint32_t mant = absu & 0x7fffffu;
    uint32_t h = (e << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static float f8_to_f32(uint8_t b, int e4m3) {
    int sign = b >> 7;
    int ebits = e4m3 ? 4 : 5, mbits = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
    int e = (b >> mbits) & ((1 << ebits) - 1);
    int m = b & ((1 << mbits) - 1);
    float v;
    if (e4m3 && e == 15 && m == 7) return NAN;
    if (!e4m3 && e == 31) return m ? NAN : (sign ? -INFINITY : INFINITY);
    if (e == 0)
        v = ldexpf((float)m, 1 - bias - mbits);
    else
        v = ldexpf((float)(m + (1 << mbits)), e - bias - mbits);
    return sign ? -v : v;
}

int rp_convert_to_f32(float *dst, const void *src, rp_dtype st, size_t n) {
    const unsigned char *p = (const unsigned char *)src;
    size_t es = rp_dtype_size(st);
    for (size_t i = 0; i < n; i++, p += es) {
        switch (st) {
        case RP_F32: memcpy(&dst[i], p, 4); break;
        case RP_F64: { double d; memcpy(&d, p, 8); dst[i] = (float)d; break; }
        case RP_BF16: { uint16_t h; memcpy(&h, p, 2); dst[i] = rp_bf16_to_f32(h); break; }
        case RP_F16: { uint16_t h; memcpy(&h, p, 2); dst[i] = rp_f16_to_f32(h); break; }
        case RP_I8: dst[i] = (float)(int8_t)p[0]; break;
        case RP_U8: case RP_BOOL: dst[i] = (float)p[0]; break;
        case RP_I16: { int16_t v; memcpy(&v, p, 2); dst[i] = (float)v; break; }
        case RP_I32: { int32_t v; memcpy(&v, p, 4); dst[i] = (float)v; break; }
        case RP_I64: { int64_t v; memcpy(&v, p, 8); dst[i] = (float)v; break; }
        case RP_F8_E4M3: dst[i] = f8_to_f32(p[0], 1); break;
        case RP_F8_E5M2: dst[i] = f8_to_f32(p[0], 0); break;
        default: return -1;
        }
    }
    return 0;
}

int rp_convert_from_f32(void *dst, rp_dtype dt, const float *src, size_t n) {
    unsigned char *p = (unsigned char *)dst;
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case RP_F32: memcpy(p + 4 * i, &src[i], 4); break;
        case RP_F64: { double d = src[i]; memcpy(p + 8 * i, &d, 8); break; }
        case RP_BF16: { uint16_t h = rp_f32_to_bf16(src[i]); memcpy(p + 2 * i, &h, 2); break; }
        case RP_F16: { uint16_t h = rp_f32_to_f16(src[i]); memcpy(p + 2 * i, &h, 2); break; }
        default: return -1;
        }
    }
    return 0;
}

void *rp_malloc(size_t n) { return malloc(n ? n : 1); }

void *rp_calloc(size_t count, size_t size) { return calloc(count ? count : 1, size ? size : 1); }

void *rp_realloc_array(void *p, size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    size_t bytes = count * size;
    return realloc(p, bytes ? bytes : 1);
}

char *rp_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void rp_take_params(void *dst, size_t full, const void *src) {
    if (!src) return;
    uint32_t sz;
    memcpy(&sz, src, sizeof sz);
    if (sz > full) sz = (uint32_t)full;
    if (sz > sizeof(uint32_t)) memcpy((char *)dst + sizeof(uint32_t), (const char *)src + sizeof(uint32_t), sz - sizeof(uint32_t));
}

void rp_give_result(void *dst, const void *src, size_t full) {
    uint32_t sz;
    memcpy(&sz, dst, sizeof sz);
    if (sz > full) sz = (uint32_t)full;
    if (sz > sizeof(uint32_t)) memcpy((char *)dst + sizeof(uint32_t), (const char *)src + sizeof(uint32_t), sz - sizeof(uint32_t));
}

double rp_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---------------------------------------------------------------------------------- */
/* Whole-file images (the tensor-file readers and the binidx reader)                   */
/* ---------------------------------------------------------------------------------- */

/* Reads size bytes of fd into a new buffer, for systems or files where mmap fails. */
static int read_whole(int fd, const char *path, size_t size, unsigned char **out, rp_err *err) {
    unsigned char *buf = (unsigned char *)rp_malloc(size);
    if (!buf)
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY,
                       "%s: cannot map the file and no memory to read its %zu bytes", path, size);
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(fd, buf + got, size - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(buf);
            return rp_fail(err, RWKVPEFT_E_IO, "%s: read failed at offset %zu: %s", path, got,
                           e ? strerror(e) : "unexpected end of file");
        }
        got += (size_t)r;
    }
    *out = buf;
    return 0;
}

int rp_file_image_open(const char *path, rp_file_image *img, rp_err *err) {
    memset(img, 0, sizeof *img);
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return rp_fail(err, RWKVPEFT_E_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0)
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX)
        rc = rp_fail(err, RWKVPEFT_E_UNSUPPORTED, "%s: file too large for this address space", path);
    else if (st.st_size > 0) {
        size_t size = (size_t)st.st_size;
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            img->data = (const unsigned char *)p;
            img->mapped = 1;
        } else {
            unsigned char *buf = NULL;
            rc = read_whole(fd, path, size, &buf, err);
            img->data = buf;
        }
        if (rc == 0) img->size = size;
    }
    close(fd);
    return rc;
}

void rp_file_image_close(rp_file_image *img) {
    if (!img) return;
    if (img->data) {
        if (img->mapped)
            munmap((void *)(uintptr_t)img->data, img->size);
        else
            free((void *)(uintptr_t)img->data);
    }
    memset(img, 0, sizeof *img);
}
