/* MALIS weights and rand error: edge sort, union-find, small-into-large count maps (malis.h). */
#include "malis.h"
#include "common.h"

#include <string.h>

/* Sorted edges carry their output index e = c*V + v in the low 30 bits and two flags. */
#define EDGE_LT ((uint32_t)1 << 31) /* clipped affinity < 0.5 */
#define EDGE_GT ((uint32_t)1 << 30) /* clipped affinity > 0.5 */
#define EDGE_MASK (EDGE_GT - 1)
#define MAX_EDGES ((int64_t)EDGE_GT)

static int check_shape(const int64_t shape[3], int64_t *V)
{
    if (!shape || shape[0] < 1 || shape[1] < 1 || shape[2] < 1)
        return znn_fail(ZNN_ERR_ARG, "malis: shape must have three positive sizes");
    /* 3 * V < 2^30, checked without overflowing int64 */
    int64_t v = shape[0];
    int ok = v < MAX_EDGES && shape[1] < MAX_EDGES / v;
    if (ok) v *= shape[1];
    ok = ok && shape[2] < MAX_EDGES / v;
    if (ok) v *= shape[2];
    if (!ok || 3 * v >= MAX_EDGES)
        return znn_fail(ZNN_ERR_ARG, "malis: volume of %lld x %lld x %lld voxels is too large "
                        "(3 * voxels must be below 2^30)", (long long)shape[0],
                        (long long)shape[1], (long long)shape[2]);
    *V = v;
    return ZNN_OK;
}

/* Union-find root with path halving. */
static inline int32_t uf_find(int32_t *parent, int32_t i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

/* Sort (key, idx) pairs by key ascending, stably (LSD radix, 16-bit digits).  Digits shared by
 * every key are skipped.  On return *key / *idx point to the sorted arrays (either the inputs or
 * the scratch buffers tk / ti). */
static int radix_sort(uint64_t **key, uint32_t **idx, uint64_t *tk, uint32_t *ti, int64_t n)
{
    if (n < 2) return ZNN_OK;
    size_t *hist = znn_calloc(4 * 65536 * sizeof(size_t));
    if (!hist) return znn_fail(ZNN_ERR_NOMEM, "malis: out of memory (sort histogram)");
    uint64_t *k = *key, *k2 = tk;
    uint32_t *x = *idx, *x2 = ti;
    for (int64_t i = 0; i < n; ++i) {
        uint64_t v = k[i];
        hist[0 * 65536 + (v & 0xffff)]++;
        hist[1 * 65536 + ((v >> 16) & 0xffff)]++;
        hist[2 * 65536 + ((v >> 32) & 0xffff)]++;
        hist[3 * 65536 + (v >> 48)]++;
    }
    for (int d = 0; d < 4; ++d) {
        size_t *h = hist + (size_t)d * 65536;
        const int shift = 16 * d;
        if (h[(k[0] >> shift) & 0xffff] == (size_t)n) continue;
        size_t sum = 0;
        for (int b = 0; b < 65536; ++b) {
            size_t c = h[b];
            h[b] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; ++i) {
            size_t p = h[(k[i] >> shift) & 0xffff]++;
            k2[p] = k[i];
            x2[p] = x[i];
        }
        uint64_t *tk_ = k; k = k2; k2 = tk_;
        uint32_t *tx_ = x; x = x2; x2 = tx_;
    }
    znn_free(hist);
    *key = k;
    *idx = x;
    return ZNN_OK;
}

/* ---- count maps: open addressing keyed by (map handle, segment id) -> node ---- */

typedef struct { int32_t h, k, node; } slot_t;

typedef struct {
    slot_t *s;
    uint64_t mask;
    int shift;
} table_t;

static inline uint64_t tab_home(const table_t *t, int32_t h, int32_t k)
{
    uint64_t key = ((uint64_t)(uint32_t)h << 32) | (uint32_t)k;
    return (key * 0x9E3779B97F4A7C15ull) >> t->shift;
}

static inline int64_t tab_find(const table_t *t, int32_t h, int32_t k)
{
    uint64_t i = tab_home(t, h, k);
    while (t->s[i].h >= 0) {
        if (t->s[i].h == h && t->s[i].k == k) return (int64_t)i;
        i = (i + 1) & t->mask;
    }
    return -1;
}

static inline void tab_insert(table_t *t, int32_t h, int32_t k, int32_t node)
{
    uint64_t i = tab_home(t, h, k);
    while (t->s[i].h >= 0) i = (i + 1) & t->mask;
    t->s[i].h = h;
    t->s[i].k = k;
    t->s[i].node = node;
}

/* Linear-probing deletion by backward shift: keeps every probe chain intact without tombstones,
 * so the table never holds more than the live entries (at most the labelled voxels). */
static inline void tab_remove(table_t *t, uint64_t i)
{
    uint64_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (t->s[j].h < 0) break;
        uint64_t r = tab_home(t, t->s[j].h, t->s[j].k);
        int stays = (j > i) ? (r > i && r <= j) : (r > i || r <= j);
        if (!stays) {
            t->s[i] = t->s[j];
            i = j;
        }
    }
    t->s[i].h = -1;
}

/* Kruskal over edges already sorted; see malis.h for what is counted. */
static int malis_count(const uint32_t *edges, int64_t ne, const int64_t *seg, int64_t nseg,
                       const int64_t shape[3], int frac, double *merger, double *splitter,
                       znn_malis_stats *st)
{
    const int64_t V = znn_vol3(shape);
    const int64_t stride[3] = {1, shape[2], shape[1] * shape[2]};
    int status = ZNN_OK;

    int64_t nl = 0;
    for (int64_t v = 0; v < V; ++v) {
        if (seg[v] < 0 || seg[v] > nseg)
            return znn_fail(ZNN_ERR_ARG, "malis: segment id %lld at voxel %lld is outside "
                            "[0, %lld]", (long long)seg[v], (long long)v, (long long)nseg);
        nl += seg[v] > 0;
    }
    uint64_t cap = 8;
    int bits = 3;
    while (cap < (uint64_t)(2 * nl)) { cap <<= 1; ++bits; }

    int32_t *parent = znn_malloc(V * sizeof(int32_t));
    int32_t *usize = znn_malloc(V * sizeof(int32_t));
    int32_t *hnd = znn_malloc(V * sizeof(int32_t));     /* root -> map handle */
    int32_t *nent = znn_malloc(V * sizeof(int32_t));    /* handle -> distinct ids */
    int32_t *tot = znn_malloc(V * sizeof(int32_t));     /* handle -> labelled voxels */
    int32_t *head = znn_malloc(V * sizeof(int32_t));    /* handle -> first node */
    int32_t *nk = znn_malloc(V * sizeof(int32_t));      /* node -> segment id */
    int32_t *ncnt = znn_malloc(V * sizeof(int32_t));    /* node -> count */
    int32_t *nnext = znn_malloc(V * sizeof(int32_t));   /* node -> next node of its map */
    double *totf = frac ? znn_malloc(V * sizeof(double)) : NULL;
    double *inv = frac ? znn_malloc((nseg + 1) * sizeof(double)) : NULL;
    table_t tab = {znn_malloc(cap * sizeof(slot_t)), cap - 1, 64 - bits};
    if (!parent || !usize || !hnd || !nent || !tot || !head || !nk || !ncnt || !nnext ||
        !tab.s || (frac && (!totf || !inv))) {
        status = znn_fail(ZNN_ERR_NOMEM, "malis: out of memory (%lld voxels)", (long long)V);
        goto done;
    }
    for (uint64_t i = 0; i < cap; ++i) tab.s[i].h = -1;
    if (frac) {
        for (int64_t k = 0; k <= nseg; ++k) inv[k] = 0.0;
        for (int64_t v = 0; v < V; ++v) inv[seg[v]] += 1.0;
        for (int64_t k = 0; k <= nseg; ++k) inv[k] = inv[k] > 0 ? 1.0 / inv[k] : 0.0;
    }
    for (int64_t v = 0; v < V; ++v) {
        const int32_t i = (int32_t)v, k = (int32_t)seg[v];
        parent[i] = i;
        usize[i] = 1;
        hnd[i] = i;
        nnext[i] = -1;
        nk[i] = k;
        ncnt[i] = 1;
        if (k > 0) {
            nent[i] = 1;
            tot[i] = 1;
            head[i] = i;
            if (frac) totf[i] = inv[k];
            tab_insert(&tab, i, k, i);
        } else {
            nent[i] = 0;
            tot[i] = 0;
            head[i] = -1;
            if (frac) totf[i] = 0.0;
        }
    }
    if (merger) memset(merger, 0, 3 * V * sizeof(double));
    if (splitter) memset(splitter, 0, 3 * V * sizeof(double));

    double tp = 0, tn = 0, fp = 0, fn = 0;
    for (int64_t t = 0; t < ne; ++t) {
        const uint32_t f = edges[t];
        const int64_t e = f & EDGE_MASK;
        const int c = e >= 2 * V ? 2 : (e >= V ? 1 : 0);
        const int64_t v = e - c * V;
        int32_t ra = uf_find(parent, (int32_t)(v - stride[c]));
        int32_t rb = uf_find(parent, (int32_t)v);
        if (ra == rb) continue;
        int32_t hs = hnd[ra], hl = hnd[rb];
        if (nent[hs] > nent[hl]) { int32_t tmp = hs; hs = hl; hl = tmp; }
        double same = 0, diff = 0;
        if (nent[hs] > 0) {
            int64_t same_i = 0;
            double same_f = 0;
            int32_t matches = 0;
            /* Move every entry of the smaller map into the larger one, counting pairs. */
            for (int32_t j = head[hs]; j >= 0;) {
                const int32_t next = nnext[j], k = nk[j];
                tab_remove(&tab, (uint64_t)tab_find(&tab, hs, k));
                const int64_t sl = tab_find(&tab, hl, k);
                if (sl >= 0) {
                    const int32_t jl = tab.s[sl].node;
                    if (frac)
                        same_f += (ncnt[j] * inv[k]) * (ncnt[jl] * inv[k]);
                    else
                        same_i += (int64_t)ncnt[j] * ncnt[jl];
                    ncnt[jl] += ncnt[j];
                    ++matches;
                } else {
                    tab_insert(&tab, hl, k, j);
                    nnext[j] = head[hl];
                    head[hl] = j;
                }
                j = next;
            }
            if (frac) {
                same = same_f;
                /* all labelled voxels in one segment: exactly no different-segment pair */
                if (nent[hs] == 1 && nent[hl] == 1 && matches == 1)
                    diff = 0.0;
                else
                    diff = totf[hs] * totf[hl] - same_f;
                if (diff < 0) diff = 0.0;
                totf[hl] += totf[hs];
            } else {
                same = (double)same_i;
                diff = (double)((int64_t)tot[hs] * tot[hl] - same_i);
            }
            nent[hl] += nent[hs] - matches;
            tot[hl] += tot[hs];
            nent[hs] = 0;
            tot[hs] = 0;
            head[hs] = -1;
        }
        if (usize[ra] < usize[rb]) { int32_t tmp = ra; ra = rb; rb = tmp; }
        parent[rb] = ra;
        usize[ra] += usize[rb];
        hnd[ra] = hl;
        if (merger) merger[e] = diff;
        if (splitter) splitter[e] = same;
        if (f & EDGE_LT) fn += same; else tp += same;
        if (f & EDGE_GT) fp += diff; else tn += diff;
    }
    st->n = nl;
    st->tp = tp;
    st->tn = tn;
    st->fp = fp;
    st->fn = fn;
    st->rand_error = nl > 1 ? (fp + fn) / ((double)nl * (double)(nl - 1) / 2.0) : 0.0;

done:
    znn_free(parent); znn_free(usize); znn_free(hnd); znn_free(nent); znn_free(tot);
    znn_free(head); znn_free(nk); znn_free(ncnt); znn_free(nnext); znn_free(totf);
    znn_free(inv); znn_free(tab.s);
    return status;
}

/* Sortable keys: ascending key order = descending affinity.  Float and double keys order the
 * same values identically (float -> double is exact and monotone). */
static inline uint64_t key_of_s(float a)
{
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    u = (u >> 31) ? ~u : (u | 0x80000000u);
    return (uint64_t)(~u) << 32;
}

static inline uint64_t key_of_d(double a)
{
    uint64_t u;
    memcpy(&u, &a, sizeof u);
    u = (u >> 63) ? ~u : (u | 0x8000000000000000ull);
    return ~u;
}

#define REAL float
#define SUFFIX _s
#include "malis_real.inc"
#undef REAL
#undef SUFFIX

#define REAL double
#define SUFFIX _d
#include "malis_real.inc"
#undef REAL
#undef SUFFIX
