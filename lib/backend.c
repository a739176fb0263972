/* backend.c — the backend registry: built-in CPU tables and GPU modules found at run time.
 *
 * A GPU module is a shared library librwkvpeft_<name>.so exporting
 *     const rp_backend_ops *rwkvpeft_backend_module(uint32_t api_version);
 * It is searched in: the explicit module path, $RWKVPEFT_MODULE_PATH, the folder holding
 * librwkvpeft itself (found with dladdr), then the dynamic loader's own search path. It is
 * opened with RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE: NODELETE because unloading the CUDA
 * runtime at exit breaks LeakSanitizer and costs nothing to keep.
 */
#include "backend.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const registry_names[] = {"cpu", "cpu64", "cuda", "hip"};

int rp_backend_registry_count(void) { return (int)(sizeof registry_names / sizeof registry_names[0]); }

const char *rp_backend_registry_name(int index) {
    return index >= 0 && index < rp_backend_registry_count() ? registry_names[index] : NULL;
}

typedef const rp_backend_ops *(*module_entry_fn)(uint32_t);

/* One cache entry per GPU backend name, filled once per module path. */
typedef struct module_cache {
    int tried;
    char path_key[1024];
    const rp_backend_ops *ops;
    char why[256];
} module_cache;

static module_cache cache_cuda, cache_hip;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void self_dir(char *out, size_t n) {
    Dl_info info;
    out[0] = 0;
    if (dladdr((void *)&rp_backend_registry_count, &info) && info.dli_fname) {
        snprintf(out, n, "%s", info.dli_fname);
        char *slash = strrchr(out, '/');
        if (slash)
            *slash = 0;
        else
            out[0] = 0;
    }
}

static void *try_open(const char *dir, const char *file, char *why, size_t why_n) {
    char path[1200];
    if (dir && dir[0])
        snprintf(path, sizeof path, "%s/%s", dir, file);
    else
        snprintf(path, sizeof path, "%s", file);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h && why[0] == 0) {
        const char *e = dlerror();
        snprintf(why, why_n, "%s", e ? e : "dlopen failed");
    }
    return h;
}

static const rp_backend_ops *load_module(const char *name, const char *module_path, char *why, size_t why_n) {
    char file[64], dir[1024];
    snprintf(file, sizeof file, "librwkvpeft_%s.so", name);
    why[0] = 0;
    void *h = NULL;
    if (module_path && module_path[0]) {
        h = try_open(module_path, file, why, why_n);
    } else {
        const char *env = getenv("RWKVPEFT_MODULE_PATH");
        if (env && env[0]) h = try_open(env, file, why, why_n);
        if (!h) {
            self_dir(dir, sizeof dir);
            if (dir[0]) h = try_open(dir, file, why, why_n);
        }
        if (!h) h = try_open(NULL, file, why, why_n);
    }
    if (!h) {
        char tmp[400];
        snprintf(tmp, sizeof tmp, "module %s not loadable (%s)", file, why);
        snprintf(why, why_n, "%.*s", (int)(why_n - 1), tmp);
        return NULL;
    }
    module_entry_fn entry = (module_entry_fn)dlsym(h, "rwkvpeft_backend_module");
    if (!entry) {
        snprintf(why, why_n, "%s does not export rwkvpeft_backend_module", file);
        return NULL;
    }
    const rp_backend_ops *ops = entry(RP_BACKEND_API_VERSION);
    if (!ops) {
        snprintf(why, why_n, "%s refused backend API version %d", file, RP_BACKEND_API_VERSION);
        return NULL;
    }
    if (ops->api_version != RP_BACKEND_API_VERSION || ops->struct_size < sizeof(rp_backend_ops)) {
        snprintf(why, why_n, "%s was built for backend API %u (this library: %d); rebuild it", file,
                 ops->api_version, RP_BACKEND_API_VERSION);
        return NULL;
    }
    return ops;
}

const rp_backend_ops *rp_backend_find(const char *name, const char *module_path, int *device_count, char *desc,
                                      size_t desc_size, rp_err *err) {
    const rp_backend_ops *ops = NULL;
    char localdesc[256];
    if (!desc) {
        desc = localdesc;
        desc_size = sizeof localdesc;
    }
    desc[0] = 0;
    if (device_count) *device_count = 0;
    if (strcmp(name, "cpu") == 0)
        ops = &rp_cpu32_ops;
    else if (strcmp(name, "cpu64") == 0)
        ops = &rp_cpu64_ops;
    else if (strcmp(name, "cuda") == 0 || strcmp(name, "hip") == 0) {
        module_cache *mc = name[0] == 'c' ? &cache_cuda : &cache_hip;
        const char *key = module_path ? module_path : "";
        pthread_mutex_lock(&cache_lock);
        if (!mc->tried || strcmp(mc->path_key, key) != 0) {
            mc->ops = load_module(name, module_path, mc->why, sizeof mc->why);
            snprintf(mc->path_key, sizeof mc->path_key, "%s", key);
            mc->tried = 1;
        }
        ops = mc->ops;
        if (!ops) snprintf(desc, desc_size, "%s", mc->why);
        pthread_mutex_unlock(&cache_lock);
        if (!ops) {
            rp_fail(err, RWKVPEFT_E_BACKEND, "%s backend unavailable: %s", name, desc);
            return NULL;
        }
    } else {
        rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown backend \"%s\" (expected auto, cpu, cpu64, cuda or hip)",
                name);
        return NULL;
    }
    int count = ops->probe(desc, desc_size);
    if (device_count) *device_count = count;
    if (count <= 0) {
        rp_fail(err, RWKVPEFT_E_BACKEND, "%s backend unavailable: %s", name, desc[0] ? desc : "no device");
        return NULL;
    }
    return ops;
}
