/* peft_flags.h — RWKV-PEFT's adapter flags (--peft, --lora_config, --pissa_config,
 * --bone_config, --disha_config, --train_type) turned into rwkvpeft_adapter_params, and the
 * adapter sidecar "<adapter>.adapter.json" that rwkvpeft-train writes next to every saved
 * adapter and rwkvpeft-eval / rwkvpeft-merge read (so the merge knows the alpha the adapter
 * was trained with, and the --quant format of the base it was trained on). Shared by the example tools; public API only. */
#ifndef RWKVPEFT_PEFT_FLAGS_H
#define RWKVPEFT_PEFT_FLAGS_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rwkvpeft.h"

typedef struct peft_cli {
    /* inputs: the flag values (NULL = not given) */
    const char *peft, *train_type, *lora_config, *pissa_config, *bone_config, *disha_config;
    /* resolved */
    int method;          /* rwkvpeft_peft_method */
    int r, svd_niter;
    double alpha, dropout;
    char load[1024];       /* lora_load / pissa_load / bone_load / disha load */
    char pissa_init[1024]; /* pissa_config.pissa_init */
    char key[8];           /* Bone/Bat tensor suffix: "bone" (--peft bone) or "disha" */
    char name[16];         /* method name for messages and the sidecar: lora pissa bone bat state none */
    int quant;             /* rwkvpeft_quant_type of the run (--quant; sidecar "quant") */
} peft_cli;

/* --quant names as RWKV-PEFT spells them: none, nf4, fp4, 4bit (= fp4, bitsandbytes'
 * default 4-bit type), int8, fp8. Returns the rwkvpeft_quant_type, or -1. */
static inline int peft_quant_parse(const char *s) {
    if (!s || !strcmp(s, "none") || !s[0]) return RWKVPEFT_QUANT_NONE;
    if (!strcmp(s, "nf4")) return RWKVPEFT_QUANT_NF4;
    if (!strcmp(s, "fp4") || !strcmp(s, "4bit")) return RWKVPEFT_QUANT_FP4;
    if (!strcmp(s, "int8")) return RWKVPEFT_QUANT_INT8;
    if (!strcmp(s, "fp8")) return RWKVPEFT_QUANT_FP8;
    return -1;
}

static inline const char *peft_quant_name(int q) {
    static const char *names[] = {"none", "nf4", "fp4", "int8", "fp8"};
    return q >= 0 && q <= 4 ? names[q] : "?";
}

static inline void peft_cli_init(peft_cli *c) {
    memset(c, 0, sizeof *c);
    c->peft = "none";
    c->train_type = "none";
    c->r = 8;
    c->alpha = 32;
    c->dropout = 0.01;
    c->svd_niter = 4;
}

/* Reads the JSON object `json` of flag `flag`; keys are matched against the names in
 * `keys` (NULL-terminated) and stored by the callback. Unknown keys are an error. */
typedef int (*peft_kv_fn)(peft_cli *c, const char *key, const cJSON *v);

static inline int peft_parse_json(peft_cli *c, const char *flag, const char *json, peft_kv_fn fn, const char *known, char *err,
                           size_t n) {
    cJSON *j = cJSON_Parse(json);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        snprintf(err, n, "--%s is not a JSON object: %s", flag, json);
        return -1;
    }
    for (cJSON *it = j->child; it; it = it->next)
        if (fn(c, it->string, it)) {
            snprintf(err, n, "--%s: unknown or mistyped key \"%s\" (%s)", flag, it->string, known);
            cJSON_Delete(j);
            return -1;
        }
    cJSON_Delete(j);
    return 0;
}

static inline int peft_str(char *dst, size_t n, const cJSON *v) {
    if (!cJSON_IsString(v)) return -1;
    snprintf(dst, n, "%s", v->valuestring);
    return 0;
}

static inline int peft_kv_lora(peft_cli *c, const char *k, const cJSON *v) {
    if (!strcmp(k, "lora_r") && cJSON_IsNumber(v)) c->r = v->valueint;
    else if (!strcmp(k, "lora_alpha") && cJSON_IsNumber(v)) c->alpha = v->valuedouble;
    else if (!strcmp(k, "lora_dropout") && cJSON_IsNumber(v)) c->dropout = v->valuedouble;
    else if (!strcmp(k, "lora_load")) return peft_str(c->load, sizeof c->load, v);
    else if (!strcmp(k, "lora_parts") && cJSON_IsString(v) && !strcmp(v->valuestring, "att,ffn")) return 0;
    else return -1;
    return 0;
}

static inline int peft_kv_pissa(peft_cli *c, const char *k, const cJSON *v) {
    if (!strcmp(k, "pissa_r") && cJSON_IsNumber(v)) c->r = v->valueint;
    else if (!strcmp(k, "svd_niter") && cJSON_IsNumber(v)) c->svd_niter = v->valueint;
    else if (!strcmp(k, "pissa_load")) return peft_str(c->load, sizeof c->load, v);
    else if (!strcmp(k, "pissa_init")) return peft_str(c->pissa_init, sizeof c->pissa_init, v);
    else return -1;
    return 0;
}

/* --bone_config: NOV {"bone_load","bone_r"} = block-affine (our Bat); LATE-NOV adds
 * "bone_mode": "bone" (row-shared) or "bat". */
static inline int peft_kv_bone(peft_cli *c, const char *k, const cJSON *v) {
    if (!strcmp(k, "bone_r") && cJSON_IsNumber(v)) c->r = v->valueint;
    else if (!strcmp(k, "bone_load")) return peft_str(c->load, sizeof c->load, v);
    else if (!strcmp(k, "bone_mode") && cJSON_IsString(v) && !strcmp(v->valuestring, "bone")) c->method = RWKVPEFT_PEFT_BONE;
    else if (!strcmp(k, "bone_mode") && cJSON_IsString(v) && !strcmp(v->valuestring, "bat")) c->method = RWKVPEFT_PEFT_BAT;
    else if (!strcmp(k, "bone_parts") && cJSON_IsString(v) && !strcmp(v->valuestring, "att,ffn")) return 0;
    else return -1;
    return 0;
}

static inline int peft_kv_disha(peft_cli *c, const char *k, const cJSON *v) {
    if (!strcmp(k, "r") && cJSON_IsNumber(v)) c->r = v->valueint;
    else if (!strcmp(k, "load")) return peft_str(c->load, sizeof c->load, v);
    else if (!strcmp(k, "mode") && cJSON_IsString(v) && !strcmp(v->valuestring, "bone")) c->method = RWKVPEFT_PEFT_BONE;
    else if (!strcmp(k, "mode") && cJSON_IsString(v) && !strcmp(v->valuestring, "bat")) c->method = RWKVPEFT_PEFT_BAT;
    else return -1;
    return 0;
}

/* Resolves the flags into c->method etc. Returns 0, or -1 with a message in err. */
static inline int peft_cli_resolve(peft_cli *c, char *err, size_t n) {
    const char *p = c->peft ? c->peft : "none";
    int state = c->train_type && !strcmp(c->train_type, "state");
    /* infctx chooses how long sequences are processed (the trainer's chunk_ctx), not the
     * adapter: it combines with any --peft method */
    int infctx = c->train_type && !strcmp(c->train_type, "infctx");
    if (c->train_type && strcmp(c->train_type, "none") && !state && !infctx) {
        snprintf(err, n, "--train_type %s is not known (none, state or infctx)", c->train_type);
        return -1;
    }
    if (!strcmp(p, "none")) {
        c->method = state ? RWKVPEFT_PEFT_STATE : RWKVPEFT_PEFT_NONE;
    } else if (state) {
        snprintf(err, n, "--train_type state trains only the states; it cannot be combined with --peft %s here", p);
        return -1;
    } else if (!strcmp(p, "lora")) {
        c->method = RWKVPEFT_PEFT_LORA;
        if (c->lora_config &&
            peft_parse_json(c, "lora_config", c->lora_config, peft_kv_lora, "lora_load, lora_r, lora_alpha, lora_dropout", err, n))
            return -1;
    } else if (!strcmp(p, "pissa")) {
        c->method = RWKVPEFT_PEFT_PISSA;
        if (c->pissa_config &&
            peft_parse_json(c, "pissa_config", c->pissa_config, peft_kv_pissa, "pissa_load, pissa_init, pissa_r, svd_niter", err, n))
            return -1;
    } else if (!strcmp(p, "bone")) {
        c->method = RWKVPEFT_PEFT_BAT; /* NOV's "bone" is block-affine; bone_mode "bone" selects the row-shared one */
        c->r = 64;
        if (c->bone_config &&
            peft_parse_json(c, "bone_config", c->bone_config, peft_kv_bone, "bone_load, bone_r, bone_mode bone|bat", err, n))
            return -1;
        snprintf(c->key, sizeof c->key, "bone");
    } else if (!strcmp(p, "disha")) {
        c->method = -1;
        c->r = 64;
        if (c->disha_config &&
            peft_parse_json(c, "disha_config", c->disha_config, peft_kv_disha, "mode bone|bat, load, r", err, n))
            return -1;
        if (c->method < 0) {
            snprintf(err, n, "--peft disha needs --disha_config with \"mode\": \"bone\" or \"bat\" (the reference's default "
                             "mode creates no adapter, spec §9.13)");
            return -1;
        }
        snprintf(c->key, sizeof c->key, "disha");
    } else {
        snprintf(err, n, "--peft %s is not implemented (none, lora, pissa, bone, disha)", p);
        return -1;
    }
    static const char *names[] = {"none", "lora", "pissa", "bone", "bat", "state"};
    snprintf(c->name, sizeof c->name, "%s", names[c->method]);
    if (c->pissa_config && c->method != RWKVPEFT_PEFT_PISSA) {
        snprintf(err, n, "--pissa_config given but --peft is %s", p);
        return -1;
    }
    if ((c->bone_config && strcmp(p, "bone")) || (c->disha_config && strcmp(p, "disha"))) {
        snprintf(err, n, "--%s given but --peft is %s", c->bone_config ? "bone_config" : "disha_config", p);
        return -1;
    }
    return 0;
}

/* Fills the adapter params from the resolved flags (train_parts etc. stay the caller's). */
static inline void peft_cli_apply(const peft_cli *c, rwkvpeft_adapter_params *ap) {
    ap->method = c->method;
    ap->r = c->r;
    ap->alpha = (float)c->alpha;
    ap->dropout = c->method == RWKVPEFT_PEFT_LORA ? (float)c->dropout : 0.0f;
    ap->svd_niter = c->svd_niter;
    ap->pissa_init = c->pissa_init[0] ? c->pissa_init : NULL;
    ap->key_name = c->key[0] ? c->key : NULL;
}

/* ---- the sidecar ------------------------------------------------------------------------- */

static inline int peft_sidecar_write(const char *adapter_path, const peft_cli *c, const char *train_parts, const char *pissa_init) {
    char path[1200];
    snprintf(path, sizeof path, "%s.adapter.json", adapter_path);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "peft", c->name);
    if (c->method != RWKVPEFT_PEFT_NONE && c->method != RWKVPEFT_PEFT_STATE) cJSON_AddNumberToObject(j, "r", c->r);
    if (c->method == RWKVPEFT_PEFT_LORA) {
        cJSON_AddNumberToObject(j, "lora_alpha", c->alpha);
        cJSON_AddNumberToObject(j, "lora_dropout", c->dropout);
    }
    if (c->method == RWKVPEFT_PEFT_PISSA) {
        cJSON_AddNumberToObject(j, "svd_niter", c->svd_niter);
        if (pissa_init) cJSON_AddStringToObject(j, "pissa_init", pissa_init);
    }
    if (c->key[0]) cJSON_AddStringToObject(j, "key", c->key);
    if (c->quant) cJSON_AddStringToObject(j, "quant", peft_quant_name(c->quant));
    cJSON_AddStringToObject(j, "train_parts", train_parts ? train_parts : "");
    char *txt = cJSON_Print(j);
    int ok = txt && fprintf(f, "%s\n", txt) > 0;
    free(txt);
    cJSON_Delete(j);
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* Reads "<adapter>.adapter.json" if present: returns 1 and fills c (method, r, alpha, key,
 * pissa_init) and train_parts; 0 when there is no sidecar; -1 when it is malformed. */
static inline int peft_sidecar_read(const char *adapter_path, peft_cli *c, char *train_parts, size_t tp_size) {
    char path[1200];
    snprintf(path, sizeof path, "%s.adapter.json", adapter_path);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char buf[8192];
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    cJSON *j = cJSON_Parse(buf);
    cJSON *p = j ? cJSON_GetObjectItem(j, "peft") : NULL;
    if (!p || !cJSON_IsString(p)) {
        cJSON_Delete(j);
        return -1;
    }
    static const char *names[] = {"none", "lora", "pissa", "bone", "bat", "state"};
    c->method = -1;
    for (int i = 0; i < 6; i++)
        if (!strcmp(p->valuestring, names[i])) c->method = i;
    if (c->method < 0) {
        cJSON_Delete(j);
        return -1;
    }
    snprintf(c->name, sizeof c->name, "%s", names[c->method]);
    const cJSON *v;
    if ((v = cJSON_GetObjectItem(j, "r")) && cJSON_IsNumber(v)) c->r = v->valueint;
    if ((v = cJSON_GetObjectItem(j, "lora_alpha")) && cJSON_IsNumber(v)) c->alpha = v->valuedouble;
    if ((v = cJSON_GetObjectItem(j, "svd_niter")) && cJSON_IsNumber(v)) c->svd_niter = v->valueint;
    if ((v = cJSON_GetObjectItem(j, "pissa_init")) && cJSON_IsString(v)) snprintf(c->pissa_init, sizeof c->pissa_init, "%s", v->valuestring);
    if ((v = cJSON_GetObjectItem(j, "key")) && cJSON_IsString(v)) snprintf(c->key, sizeof c->key, "%s", v->valuestring);
    if ((v = cJSON_GetObjectItem(j, "quant")) && cJSON_IsString(v)) {
        c->quant = peft_quant_parse(v->valuestring);
        if (c->quant < 0) {
            cJSON_Delete(j);
            return -1;
        }
    }
    if (train_parts && (v = cJSON_GetObjectItem(j, "train_parts")) && cJSON_IsString(v))
        snprintf(train_parts, tp_size, "%s", v->valuestring);
    cJSON_Delete(j);
    return 1;
}

#endif
