/* Shared by the C benchmark harnesses (state_cost.c, event_cost.c, floor_cost.c): reading
 * files, the median of a round's figures, and the library loader the sandbox calls for
 * `require` (libraries/NAME.lua under the ctx directory). */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static int harness_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n) (sorts v). */
static inline double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, harness_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline int load_library(void *ctx, const char *name, char **src, size_t *len, char **chunkname) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.lua", (const char *)ctx, name);
    *src = slurp(path, len);
    if (!*src) return 1;
    size_t n = strlen(path) + 2;
    *chunkname = malloc(n);
    snprintf(*chunkname, n, "@%s", path);
    return 0;
}

#endif
