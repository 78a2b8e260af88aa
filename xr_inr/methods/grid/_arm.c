/* The grid method's integer ARM over one decoding phase, compiled (speed only).
 *
 * phase_parameters() computes what xr_inr.methods.grid.arm._numpy_phase_parameters computes with
 * numpy, the same values bit for bit: every quantity is an integer (or an integer times 2**-e) held
 * in a double, every product and partial sum is exact (see arm.py), so the order of the sums does
 * not matter, and the centres and tables are taken with int64 shifts as there. The Python side
 * (arm.CodingModel) checks the arguments' types and sizes; this file checks the indices it follows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wpsabi" /* vectors wider than the baseline's registers: internal only */

#define INLINE static inline __attribute__((always_inline)) /* into each build below */

#define CONTEXT 12
#define FRACTION 8
#define MAX_STRIDE 32

#define WIDTH 16 /* hidden units stored per layer: narrower ARMs are padded with zero weights */
#define LANES 4  /* contexts evaluated together, one per vector lane */

/* GCC/Clang vector extensions: the compiler maps them to the target's registers (two SSE2
 * registers, one AVX2 register). A lane is a context: each hidden unit's sum is its own chain of
 * multiply-adds, so 8 to 16 chains run side by side. */
typedef double vec __attribute__((vector_size(LANES * sizeof(double))));
typedef int64_t ivec __attribute__((vector_size(LANES * sizeof(double))));

typedef struct { /* every weight splat across the lanes */
    vec w0[CONTEXT], b0;
    vec w1[CONTEXT + 1][WIDTH], b1[WIDTH]; /* the context's features, then the stride feature */
    vec w2[WIDTH][WIDTH], b2[WIDTH];
    vec w3[WIDTH][2], b3[2];
    int e;
    double unit, cap; /* 2**e, HIDDEN_CAP */
} Arm;

INLINE vec splat(double x) { return (vec){x, x, x, x}; }

/* sign(d) * log2(1 + |d| 2**-e) in units 2**-FRACTION: Mitchell's log2 read off the IEEE-754
 * pattern of |d| + 2**e (integers under 2**20, made doubles by the 2**52 trick). */
INLINE vec compress(vec d, const Arm *arm) {
    const ivec sign = (ivec)splat(-0.0);
    const vec v = (vec)((ivec)d & ~sign) + splat(arm->unit);
    const ivec pattern = ((ivec)v >> (52 - FRACTION)) - ((int64_t)(1023 + arm->e) << FRACTION);
    const vec magnitude = (vec)(pattern | (ivec)splat(0x1p52)) - splat(0x1p52);
    return (vec)((ivec)magnitude | ((ivec)d & sign));
}

INLINE int64_t clamp(int64_t x, int64_t low, int64_t high) { return x < low ? low : (x > high ? high : x); }

typedef struct {
    const int16_t *latents; /* (channels, row): each channel's grid flattened, one zero appended */
    Py_ssize_t channels, row, n;
    const Py_ssize_t *context;                    /* (n, 12) indices into a channel's row */
    const int64_t *stride;                        /* (n,), or (1,): the same for every point */
    int one_stride;
    int64_t max_latent;                           /* centres are clamped to [-max_latent, max_latent] */
    int64_t scale_min, scale_max, split, offsets; /* laplace_tables' SCALE_MIN, SCALE_MAX, SPLIT, OFFSETS */
    int64_t *centre;                              /* (channels * n,) each, channel-major */
    Py_ssize_t *table;
    Py_ssize_t tables;                            /* laplace_tables.TABLES */
    Py_ssize_t *counts, *order;                   /* symbols per table (zeros on entry); stable order by table */
} Phase;

/* The centre and table index of one point from its ARM output (arm.coding_indices and
 * laplace_tables.table_index). */
INLINE void store(const Phase *phase, int g, Py_ssize_t at, int64_t mu, int64_t log_scale) {
    const int64_t centre = (mu + ((int64_t)1 << (g - 1))) >> g;
    /* in [-4, 4] for every output of an ARM within the format's bounds; clamped so that no index leaves the tables */
    const int64_t offset = clamp(((mu - centre * ((int64_t)1 << g)) + ((int64_t)1 << (g - 4))) >> (g - 3),
                                 -(phase->offsets / 2), phase->offsets / 2);
    const int64_t j = clamp(log_scale >> (g - 3), phase->scale_min, phase->scale_max - 1);
    phase->centre[at] = clamp(centre, -phase->max_latent, phase->max_latent);
    phase->table[at] = j < phase->split ? (j - phase->scale_min) * phase->offsets + offset + phase->offsets / 2
                                        : (phase->split - phase->scale_min) * phase->offsets + j - phase->split;
}

/* A counting sort of the points by table (entropy.grouping's order and counts): returns 0, or -1
 * when out of memory. */
static int group_by_table(const Phase *phase) {
    const Py_ssize_t total = phase->channels * phase->n;
    Py_ssize_t *next = PyMem_RawMalloc(phase->tables * sizeof(Py_ssize_t));
    if (next == NULL) return -1;
    for (Py_ssize_t at = 0; at < total; at++) phase->counts[phase->table[at]]++;
    Py_ssize_t start = 0;
    for (Py_ssize_t t = 0; t < phase->tables; t++) {
        next[t] = start;
        start += phase->counts[t];
    }
    for (Py_ssize_t at = 0; at < total; at++) phase->order[next[phase->table[at]]++] = at;
    PyMem_RawFree(next);
    return 0;
}

/* The kernel (the clipped floor, the ARM over LANES contexts, a phase) from _arm_kernel.h, compiled
 * for ARMs of 8, 12 and 16 hidden units (_arm_widths.h), each for the baseline of the build (SSE2
 * on x86-64) and, with GCC on x86-64, for x86-64-v3 (AVX2, FMA), whose clipped floor is AVX's max,
 * min and round.
 * The same integers on each, as every value is exact; decoding uses x86-64-v3 where the CPU has it
 * (arm.FAST_COMPILED). */
#define JOIN(name, isa, units) name##_##isa##_##units
#define EXPAND(name, isa, units) JOIN(name, isa, units)
#define NAME(name) EXPAND(name, ISA, UNITS)
typedef void (*Kernel)(const Arm *, const Phase *);

#define ISA baseline
#include "_arm_widths.h"
#undef ISA

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define KERNEL_AVX2
#define ISA v3
#include "_arm_widths.h"
#undef ISA
#undef KERNEL_AVX2
#pragma GCC pop_options
static int has_v3(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static const Kernel *v3_kernels = baseline_kernels;
static int has_v3(void) { return 0; }
#endif

/* phase_parameters(latents, channels, row, context, n, stride, w0, b0, w1, b1, w2, b2, w3, b3, units, e,
 *                  max_latent, scale_min, scale_max, split, offsets, centre, table, tables, counts,
 *                  order, baseline):
 * ``units``, the ARM's hidden units (at most WIDTH; its weights padded to WIDTH), picks the kernel;
 * ``baseline`` true runs the baseline build whatever the CPU (for the tests). */
static PyObject *phase_parameters(PyObject *self, PyObject *args) {
    Py_buffer b[15]; /* latents, context, stride, the ARM's 8 arrays, centre, table, counts, order */
    Phase phase;
    int units, e;
    long long max_latent, scale_min, scale_max, split, offsets;
    int baseline;
    if (!PyArg_ParseTuple(args, "y*nny*ny*y*y*y*y*y*y*y*y*iiLLLLLw*w*nw*w*p", &b[0], &phase.channels, &phase.row,
                          &b[1], &phase.n, &b[2], &b[3], &b[4], &b[5], &b[6], &b[7], &b[8], &b[9], &b[10], &units,
                          &e, &max_latent, &scale_min, &scale_max, &split, &offsets, &b[11], &b[12], &phase.tables,
                          &b[13], &b[14], &baseline))
        return NULL;
    phase.latents = b[0].buf;
    phase.context = b[1].buf;
    phase.stride = b[2].buf;
    phase.one_stride = b[2].len == (Py_ssize_t)sizeof(int64_t);
    phase.max_latent = max_latent;
    phase.scale_min = scale_min;
    phase.scale_max = scale_max;
    phase.split = split;
    phase.offsets = offsets;
    phase.centre = b[11].buf;
    phase.table = b[12].buf;
    phase.counts = b[13].buf;
    phase.order = b[14].buf;
    Arm arm_storage, *arm = &arm_storage;
    const double *w0 = b[3].buf, *b0 = b[4].buf, *w1 = b[5].buf, *b1 = b[6].buf, *w2 = b[7].buf, *b2 = b[8].buf,
                 *w3 = b[9].buf, *b3 = b[10].buf;
    for (int k = 0; k < CONTEXT; k++) arm->w0[k] = splat(w0[k]);
    arm->b0 = splat(b0[0]);
    for (int j = 0; j < WIDTH; j++) {
        for (int i = 0; i <= CONTEXT; i++) arm->w1[i][j] = splat(w1[i * WIDTH + j]);
        for (int i = 0; i < WIDTH; i++) arm->w2[i][j] = splat(w2[i * WIDTH + j]);
        arm->b1[j] = splat(b1[j]);
        arm->b2[j] = splat(b2[j]);
        arm->w3[j][0] = splat(w3[2 * j]);
        arm->w3[j][1] = splat(w3[2 * j + 1]);
    }
    arm->b3[0] = splat(b3[0]);
    arm->b3[1] = splat(b3[1]);
    arm->e = e;
    arm->unit = ldexp(1.0, e);
    arm->cap = ldexp(1.0, FRACTION + 12);
    int inside = 1, grouped = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < phase.n * CONTEXT; i++) inside &= phase.context[i] >= 0 && phase.context[i] < phase.row;
    if (inside) {
        const int size = units <= 8 ? 0 : (units <= 12 ? 1 : 2);
        (!baseline && has_v3() ? v3_kernels : baseline_kernels)[size](arm, &phase);
        grouped = group_by_table(&phase);
    }
    Py_END_ALLOW_THREADS
    for (int k = 0; k < 15; k++) PyBuffer_Release(&b[k]);
    if (!inside) {
        PyErr_SetString(PyExc_ValueError, "phase_parameters: a context outside the grid");
        return NULL;
    }
    if (grouped < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* place(latents, channels, row, points, n, centre, order, residuals, scratch, max_latent): the phase's
 * decoded latents, centre + residual, into each channel's row at ``points``; the residuals come in
 * ``order`` (the phase's order by table), ``scratch`` (channels * n int64) holds them in point
 * order. Raises ValueError, and stores nothing, if a latent is not inside (-max_latent, max_latent). */
static PyObject *place(PyObject *self, PyObject *args) {
    Py_buffer b[6]; /* latents, points, centre, order, residuals, scratch */
    Py_ssize_t channels, row, n;
    long long max_latent;
    if (!PyArg_ParseTuple(args, "w*nny*ny*y*y*w*L", &b[0], &channels, &row, &b[1], &n, &b[2], &b[3], &b[4], &b[5],
                          &max_latent))
        return NULL;
    int16_t *latents = b[0].buf;
    const Py_ssize_t *points = b[1].buf, *order = b[3].buf, total = channels * n;
    const int64_t *centre = b[2].buf, *residuals = b[4].buf;
    int64_t *value = b[5].buf;
    int inside = 1, indices = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < total; i++) indices &= order[i] >= 0 && order[i] < total;
    for (Py_ssize_t i = 0; i < n; i++) indices &= points[i] >= 0 && points[i] < row;
    if (indices)
        for (Py_ssize_t i = 0; i < total; i++) value[order[i]] = residuals[i];
    for (Py_ssize_t at = 0; at < total; at++) {
        value[at] += centre[at];
        inside &= value[at] > -max_latent && value[at] < max_latent;
    }
    if (indices && inside)
        for (Py_ssize_t c = 0; c < channels; c++)
            for (Py_ssize_t i = 0; i < n; i++) latents[c * row + points[i]] = (int16_t)value[c * n + i];
    Py_END_ALLOW_THREADS
    for (int k = 0; k < 6; k++) PyBuffer_Release(&b[k]);
    if (!indices) {
        PyErr_SetString(PyExc_ValueError, "place: an order or point index outside the phase");
        return NULL;
    }
    if (!inside) {
        PyErr_SetString(PyExc_ValueError, "a decoded latent is out of range");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *vectorised(PyObject *self, PyObject *unused) { return PyBool_FromLong(has_v3()); }

static PyMethodDef methods[] = {
    {"phase_parameters", phase_parameters, METH_VARARGS,
     "Centre and table index of every channel's points of a phase, and their order by table (see arm.py)."},
    {"place", place, METH_VARARGS, "A phase's decoded latents into their grids (see arm.py)."},
    {"vectorised", vectorised, METH_NOARGS, "Whether this CPU runs the AVX2 + FMA build."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_arm", NULL, -1, methods};

PyMODINIT_FUNC PyInit__arm(void) { return PyModule_Create(&module); }
