/* The entropy coder's decoding of one batch, compiled (speed only).
 *
 * decode_grouped() decodes what xr_inr.core.entropy.decode_grouped decodes with constriction's
 * range decoder, the same integers in the same order: constriction's queue RangeDecoder with 32-bit
 * words, a 64-bit state and 24-bit probabilities (its decode_symbol: the quantile, the interval, one
 * word read when the range falls under 2**32), its categorical models' CDFs as
 * entropy._cdfs() derives them (constriction's fast quantisation, exactly), and its uniform models
 * of power-of-two sizes. Integer arithmetic only. The tests decode streams constriction encoded,
 * and every CDF boundary of every table, both ways.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define PRECISION 24
#define LENGTH_BITS 5 /* an escape's length is uniform over 32 values */

typedef struct {
    const uint32_t *words;
    Py_ssize_t size, next;  /* the stream's words, the next one to read */
    uint64_t lower, range, point;
    int invalid;            /* a quantile outside the model: not a stream this model coded */
} Decoder;

/* constriction's decode_symbol, in two halves around a model's quantile function: the quantile
 * (flagging one outside the model), then narrow() to the symbol's interval [left, left + probability). */
static inline uint64_t quantile(Decoder *d, uint64_t *scale) {
    *scale = d->range >> PRECISION;
    const uint64_t q = (d->point - d->lower) / *scale;
    if (q >> PRECISION) d->invalid = 1;
    return q & ((1u << PRECISION) - 1);
}

static inline void narrow(Decoder *d, uint64_t scale, uint64_t left, uint64_t probability) {
    d->lower += scale * left;
    d->range = scale * probability;
    if (d->range < ((uint64_t)1 << 32)) {
        d->lower <<= 32;
        d->range <<= 32;
        d->point <<= 32;
        if (d->next < d->size) d->point |= d->words[d->next++];
    }
}

/* A symbol of the categorical model whose CDF is ``cdf`` (``n`` + 1 entries, the last 2**24). */
static inline int64_t categorical(Decoder *d, const uint32_t *cdf, int n) {
    uint64_t scale;
    const uint32_t q = (uint32_t)quantile(d, &scale);
    int low = 0, high = n; /* cdf[low] <= q < cdf[high] */
    while (high - low > 1) {
        const int middle = (low + high) / 2;
        if (cdf[middle] <= q) low = middle;
        else high = middle;
    }
    narrow(d, scale, cdf[low], cdf[low + 1] - cdf[low]);
    return low;
}

/* A symbol of the uniform model over 2**bits values (1 <= bits <= PRECISION). */
static inline int64_t uniform(Decoder *d, int bits) {
    uint64_t scale;
    const uint64_t bin = (uint64_t)1 << (PRECISION - bits);
    const uint64_t symbol = quantile(d, &scale) / bin;
    narrow(d, scale, symbol * bin, bin);
    return (int64_t)symbol;
}

/* decode_grouped(words, state, tables, counts, cdfs, alphabet, low_bits, first_split, out):
 * ``state`` holds (lower, range, point, next word) and is updated; ``cdfs`` is (tables, alphabet + 1)
 * uint32; ``out`` (int64, the counts' sum) receives the residuals in the grouped order. Raises
 * ValueError on data no model coded, and leaves ``state`` unchanged then. */
static PyObject *decode_grouped(PyObject *self, PyObject *args) {
    Py_buffer b[7]; /* words, state, tables, counts, cdfs, low_bits, out */
    int alphabet, first_split;
    if (!PyArg_ParseTuple(args, "y*w*y*y*y*iy*iw*", &b[0], &b[1], &b[2], &b[3], &b[4], &alphabet, &b[5],
                          &first_split, &b[6]))
        return NULL;
    const Py_ssize_t groups = b[2].len / (Py_ssize_t)sizeof(Py_ssize_t);
    const Py_ssize_t rows = alphabet > 1 ? b[4].len / (Py_ssize_t)sizeof(uint32_t) / (alphabet + 1) : 0;
    const Py_ssize_t *tables = b[2].buf, *counts = b[3].buf;
    const uint32_t *cdfs = b[4].buf;
    const int64_t *low_bits = b[5].buf;
    int64_t *out = b[6].buf;
    uint64_t *state = b[1].buf;
    const Py_ssize_t total = b[6].len / (Py_ssize_t)sizeof(int64_t), half = alphabet / 2;
    Py_ssize_t sum = 0;
    int shapes = b[1].len == 4 * (Py_ssize_t)sizeof(uint64_t) && b[3].len == b[2].len
                 && b[5].len == rows * (Py_ssize_t)sizeof(int64_t) && alphabet > 1;
    for (Py_ssize_t g = 0; shapes && g < groups; g++) {
        shapes &= tables[g] >= 0 && tables[g] < rows && counts[g] >= 0;
        sum += counts[g];
    }
    if (!shapes || sum != total || state[3] > (uint64_t)(b[0].len / 4)) {
        for (int k = 0; k < 7; k++) PyBuffer_Release(&b[k]);
        PyErr_SetString(PyExc_ValueError, "decode_grouped: inconsistent arguments");
        return NULL;
    }
    Decoder d = {b[0].buf, b[0].len / 4, (Py_ssize_t)state[3], state[0], state[1], state[2], 0};
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t at = 0, first = -1, ends = 0;
    for (Py_ssize_t g = 0; g < groups; g++) {
        const uint32_t *cdf = cdfs + tables[g] * (alphabet + 1);
        if (tables[g] >= first_split && first < 0) first = at;
        for (Py_ssize_t i = 0; i < counts[g]; i++, at++) {
            out[at] = categorical(&d, cdf, alphabet) - half;
            ends += out[at] == -half || out[at] == half;
        }
    }
    /* the split symbols' low bits (their tables are the last groups), then the escapes' lengths and
     * bits, as entropy.decode_grouped reads them */
    int64_t *low = NULL, *escapes = NULL; /* an escape: its length n (6 bits), then its n bits above them */
    Py_ssize_t splits = first < 0 ? 0 : total - first;
    if (splits) {
        low = PyMem_RawMalloc(splits * sizeof(int64_t));
        if (low == NULL) d.invalid = 2;
        for (Py_ssize_t g = 0, i = 0; low && g < groups; g++)
            if (tables[g] >= first_split)
                for (Py_ssize_t c = 0; c < counts[g]; c++, i++) low[i] = uniform(&d, (int)low_bits[tables[g]]);
    }
    if (ends && d.invalid != 2) {
        escapes = PyMem_RawMalloc(ends * sizeof(int64_t));
        if (escapes == NULL) d.invalid = 2;
        for (Py_ssize_t e = 0; escapes && e < ends; e++) escapes[e] = uniform(&d, LENGTH_BITS);
        for (int part = 0; escapes && part < 2; part++) /* every escape's low 16 bits, then the rest */
            for (Py_ssize_t e = 0; e < ends; e++) {
                const int64_t n = escapes[e] & 63, bits = part ? (n > 16 ? n - 16 : 0) : (n < 16 ? n : 16);
                if (bits > 0) escapes[e] += uniform(&d, (int)bits) << (6 + 16 * part);
            }
        for (Py_ssize_t i = 0, e = 0; escapes && i < total; i++)
            if (out[i] == -half || out[i] == half) {
                const int64_t n = escapes[e] & 63, excess = ((int64_t)1 << n) + (escapes[e] >> 6);
                out[i] = (out[i] < 0 ? -1 : 1) * (half - 1 + excess);
                e++;
            }
    }
    for (Py_ssize_t g = 0, i = 0, o = first; low && g < groups; g++)
        if (tables[g] >= first_split)
            for (Py_ssize_t c = 0; c < counts[g]; c++, i++, o++) {
                const int64_t k = low_bits[tables[g]];
                out[o] = out[o] * ((int64_t)1 << k) - (((int64_t)1 << k) >> 1) + low[i];
            }
    PyMem_RawFree(low);
    PyMem_RawFree(escapes);
    Py_END_ALLOW_THREADS
    if (!d.invalid) {
        state[0] = d.lower;
        state[1] = d.range;
        state[2] = d.point;
        state[3] = (uint64_t)d.next;
    }
    for (int k = 0; k < 7; k++) PyBuffer_Release(&b[k]);
    if (d.invalid == 2) return PyErr_NoMemory();
    if (d.invalid) {
        PyErr_SetString(PyExc_ValueError, "the range-coded stream is invalid for its models");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode_grouped", decode_grouped, METH_VARARGS, "A batch's residuals in the grouped order (see entropy.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_range", NULL, -1, methods};

PyMODINIT_FUNC PyInit__range(void) { return PyModule_Create(&module); }
