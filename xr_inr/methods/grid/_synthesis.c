/* The grid method's synthesis: its elementwise steps, the coefficient images' filters and pulls, and the
 * latents' interpolation, each in a single pass without the GIL (speed only).
 *
 * Each function does, element by element, the IEEE-754 double operations that model.py's numpy
 * code does in whole-array passes, in the same order, so the results are the same bits (a NaN aside:
 * a sum of two keeps either's sign, as the compiler orders them). That holds
 * where a double operation rounds once: SSE2 or NEON, no excess precision (checked below), and no
 * fused multiply-add (the build passes -ffp-contract=off; there is no reassociation without
 * -ffast-math). tanh stays with numpy, between gelu_start() and gelu_finish(). model.py checks the
 * arrays' types and shapes before it calls these.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>

#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "doubles would be computed with excess precision (x87): the numpy path is used instead"
#endif

/* x (rows, n) += bias (n); t = 0.7978845608028654 * (x + 0.044715 * x * x * x), as model.gelu. */
static PyObject *gelu_start(PyObject *self, PyObject *args) {
    Py_buffer x, bias, t;
    if (!PyArg_ParseTuple(args, "w*y*w*", &x, &bias, &t)) return NULL;
    const Py_ssize_t n = bias.len / (Py_ssize_t)sizeof(double), total = n ? x.len / (Py_ssize_t)sizeof(double) : 0;
    double *xs = x.buf, *ts = t.buf;
    const double *b = bias.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < total; row += n)
        for (Py_ssize_t j = 0; j < n; j++) {
            const double v = xs[row + j] + b[j];
            double u = 0.044715 * v;
            u = u * v;
            u = u * v;
            u = u + v;
            xs[row + j] = v;
            ts[row + j] = u * 0.7978845608028654;
        }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyBuffer_Release(&bias);
    PyBuffer_Release(&t);
    Py_RETURN_NONE;
}

/* x = 0.5 * x * (1 + t), t being tanh of gelu_start()'s t, as model.gelu. */
static PyObject *gelu_finish(PyObject *self, PyObject *args) {
    Py_buffer x, t;
    if (!PyArg_ParseTuple(args, "w*y*", &x, &t)) return NULL;
    const Py_ssize_t total = x.len / (Py_ssize_t)sizeof(double);
    double *xs = x.buf;
    const double *ts = t.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < total; i++) {
        const double half = xs[i] * 0.5;
        xs[i] = half * (ts[i] + 1.0);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyBuffer_Release(&t);
    Py_RETURN_NONE;
}

/* x (rows, n) = base (rows, stride >= n, its first n columns) + (x + bias (n)): the last layer's
 * output added to the coefficients, as model.synthesise. */
static PyObject *add_output(PyObject *self, PyObject *args) {
    Py_buffer x, bias, base;
    Py_ssize_t stride;
    if (!PyArg_ParseTuple(args, "w*y*y*n", &x, &bias, &base, &stride)) return NULL;
    const Py_ssize_t n = bias.len / (Py_ssize_t)sizeof(double), rows = n ? x.len / (Py_ssize_t)sizeof(double) / n : 0;
    double *xs = x.buf;
    const double *b = bias.buf, *c = base.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < rows; row++)
        for (Py_ssize_t j = 0; j < n; j++) xs[row * n + j] = c[row * stride + j] + (xs[row * n + j] + b[j]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    PyBuffer_Release(&bias);
    PyBuffer_Release(&base);
    Py_RETURN_NONE;
}

/* values (bands, pixels) = (values + mean (bands)) * scale + offset, as model.synthesise and
 * payload.decode. */
static PyObject *spectra(PyObject *self, PyObject *args) {
    Py_buffer values, mean;
    double scale, offset;
    if (!PyArg_ParseTuple(args, "w*y*dd", &values, &mean, &scale, &offset)) return NULL;
    const Py_ssize_t bands = mean.len / (Py_ssize_t)sizeof(double);
    const Py_ssize_t pixels = bands ? values.len / (Py_ssize_t)sizeof(double) / bands : 0;
    double *v = values.buf;
    const double *m = mean.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t band = 0; band < bands; band++)
        for (Py_ssize_t i = band * pixels; i < (band + 1) * pixels; i++) {
            const double centred = v[i] + m[band];
            const double scaled = centred * scale;
            v[i] = scaled + offset;
        }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&values);
    PyBuffer_Release(&mean);
    Py_RETURN_NONE;
}

/* out (k, h, w) = images (k, h, w) plus each image's 3 x 3 correlation with its taps (k, 9), the edges
 * repeated, the taps added one after another, as model.filter_images. */
static PyObject *filter_images(PyObject *self, PyObject *args) {
    Py_buffer images, taps, out;
    Py_ssize_t height, width;
    if (!PyArg_ParseTuple(args, "y*y*w*nn", &images, &taps, &out, &height, &width)) return NULL;
    const Py_ssize_t k = taps.len / (Py_ssize_t)(9 * sizeof(double));
    const double *in = images.buf, *t = taps.buf;
    double *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < k; r++) {
        const double *image = in + r * height * width;
        for (Py_ssize_t y = 0; y < height; y++) {
            const Py_ssize_t rows[3] = {y > 0 ? y - 1 : 0, y, y + 1 < height ? y + 1 : height - 1};
            for (Py_ssize_t x = 0; x < width; x++) {
                const Py_ssize_t cols[3] = {x > 0 ? x - 1 : 0, x, x + 1 < width ? x + 1 : width - 1};
                double value = image[y * width + x];
                for (int tap = 0; tap < 9; tap++) {
                    const double product = t[r * 9 + tap] * image[rows[tap / 3] * width + cols[tap % 3]];
                    value = value + product;
                }
                o[(r * height + y) * width + x] = value;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&images);
    PyBuffer_Release(&taps);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static double clipped(double d, double bound) { return d < -bound ? -bound : (d > bound ? bound : d); }

/* out (k, n) = images + pull[r, 0] clip(d, -1/2, 1/2) + pull[r, 1] clip(d, -2, 2), d = locations - images
 * (each (k, n)), as model.pull_images (a NaN d stays NaN, as numpy's clip leaves it). */
static PyObject *pull_images(PyObject *self, PyObject *args) {
    Py_buffer images, locations, pull, out;
    if (!PyArg_ParseTuple(args, "y*y*y*w*", &images, &locations, &pull, &out)) return NULL;
    const Py_ssize_t k = pull.len / (Py_ssize_t)(2 * sizeof(double));
    const Py_ssize_t n = k ? images.len / (Py_ssize_t)sizeof(double) / k : 0;
    const double *in = images.buf, *at = locations.buf, *p = pull.buf;
    double *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < k; r++)
        for (Py_ssize_t i = r * n; i < (r + 1) * n; i++) {
            const double d = at[i] - in[i];
            const double near = p[2 * r] * clipped(d, 0.5);
            const double sum = in[i] + near;
            const double far = p[2 * r + 1] * clipped(d, 2.0);
            o[i] = sum + far;
        }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&images);
    PyBuffer_Release(&locations);
    PyBuffer_Release(&pull);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* One axis of model._interpolate at a point: a value's two neighbours weighed by (1 - frac, frac), or, where
 * every frac of the axis is 0 or 1 (exact), the neighbour itself. */
static double along(const double *values, Py_ssize_t lower, Py_ssize_t upper, double frac, int exact,
                    Py_ssize_t stride) {
    if (exact) return values[(frac == 1.0 ? upper : lower) * stride];
    const double low = values[lower * stride] * (1.0 - frac);
    const double high = values[upper * stride] * frac;
    return low + high;
}

/* A level's grids (c, gh, gw) interpolated at the pixel positions, rows (ny) then columns (nx), into the
 * columns first .. first + c of out (ny * nx, columns): model.upsampled_features' two _interpolate passes and
 * its transpose. Each axis: lower, upper (int64) and frac per position, and whether it is exact; rows
 * (c, ny, gw) holds the first pass. */
static PyObject *interpolate(PyObject *self, PyObject *args) {
    Py_buffer grid, ly, uy, fy, lx, ux, fx, rows, out;
    Py_ssize_t c, gh, gw, columns, first;
    int exact_y, exact_x;
    if (!PyArg_ParseTuple(args, "y*nnny*y*y*py*y*y*pw*w*nn", &grid, &c, &gh, &gw, &ly, &uy, &fy, &exact_y, &lx, &ux,
                          &fx, &exact_x, &rows, &out, &columns, &first))
        return NULL;
    const Py_ssize_t ny = fy.len / (Py_ssize_t)sizeof(double), nx = fx.len / (Py_ssize_t)sizeof(double);
    const double *g = grid.buf, *wy = fy.buf, *wx = fx.buf;
    const long long *ly_ = ly.buf, *uy_ = uy.buf, *lx_ = lx.buf, *ux_ = ux.buf;
    double *r = rows.buf, *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t ch = 0; ch < c; ch++)
        for (Py_ssize_t y = 0; y < ny; y++)
            for (Py_ssize_t j = 0; j < gw; j++)
                r[(ch * ny + y) * gw + j] = along(g + ch * gh * gw + j, ly_[y], uy_[y], wy[y], exact_y, gw);
    for (Py_ssize_t y = 0; y < ny; y++)
        for (Py_ssize_t x = 0; x < nx; x++)
            for (Py_ssize_t ch = 0; ch < c; ch++)
                o[(y * nx + x) * columns + first + ch] = along(r + (ch * ny + y) * gw, lx_[x], ux_[x], wx[x], exact_x, 1);
    Py_END_ALLOW_THREADS
    Py_buffer *views[] = {&grid, &ly, &uy, &fy, &lx, &ux, &fx, &rows, &out};
    for (int i = 0; i < 9; i++) PyBuffer_Release(views[i]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gelu_start", gelu_start, METH_VARARGS, "A layer's bias, then GELU's argument of tanh (see model.py)."},
    {"gelu_finish", gelu_finish, METH_VARARGS, "GELU from tanh of its argument (see model.py)."},
    {"add_output", add_output, METH_VARARGS, "The last layer's bias and the coefficients (see model.py)."},
    {"spectra", spectra, METH_VARARGS, "The mean, then the block's affine (see model.py)."},
    {"filter_images", filter_images, METH_VARARGS, "The coefficient images' 3 x 3 filters (see model.py)."},
    {"pull_images", pull_images, METH_VARARGS, "The coefficient images' pulls (see model.py)."},
    {"interpolate", interpolate, METH_VARARGS, "A level's grids at the pixel positions (see model.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_synthesis", NULL, -1, methods};

PyMODINIT_FUNC PyInit__synthesis(void) { return PyModule_Create(&module); }
