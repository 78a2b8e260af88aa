/* The grid decoder's ARM kernel, included by _arm.c once per build and ARM width: NAME() gives each
 * its names, UNITS is the hidden units it runs (of the WIDTH stored: the rest are zero weights),
 * KERNEL_AVX2 (inside a GCC target region for x86-64-v3) picks the AVX clipped floor. */

#ifdef KERNEL_AVX2
/* floor(min(max(x, 0), cap)): exact, and equal to the portable version below (cap is an integer). */
INLINE vec NAME(floor_clip)(vec x, double cap) {
    return (vec)_mm256_floor_pd(_mm256_min_pd(_mm256_max_pd((__m256d)x, _mm256_setzero_pd()), _mm256_set1_pd(cap)));
}
#else
/* floor(x) for |x| < 2**51: x + 1.5 * 2**52 - 1.5 * 2**52 rounds x to an integer, one is taken
 * off where that rounded up. Then clipped to [0, cap]. */
INLINE vec NAME(floor_clip)(vec x, double cap) {
    const vec magic = splat(0x1.8p52);
    vec rounded = (x + magic) - magic;
    rounded -= (vec)((rounded > x) & (ivec)splat(1.0)); /* 1.0 where rounded up, else 0.0 */
    const ivec positive = rounded > splat(0.0), over = rounded > splat(cap);
    return (vec)(((ivec)rounded & positive & ~over) | ((ivec)splat(cap) & over));
}
#endif

/* (mu, log2 scale) in units 2**-(e + FRACTION) of LANES contexts (arm.arm_integers):
 * context[k] holds the k-th value of each, stride their stride features. */
INLINE void NAME(evaluate)(const Arm *arm, const vec context[CONTEXT], vec stride, int64_t mu[LANES],
                           int64_t log_scale[LANES]) {
    vec prediction = arm->b0;
    for (int k = 0; k < CONTEXT; k++) prediction += context[k] * arm->w0[k];
    vec features[CONTEXT], h1[UNITS], h2[UNITS];
    for (int k = 0; k < CONTEXT; k++) features[k] = compress(context[k] * splat(arm->unit) - prediction, arm);
    stride *= splat(1 << FRACTION);
    for (int j = 0; j < UNITS; j++) h1[j] = stride * arm->w1[CONTEXT][j] + arm->b1[j];
    for (int i = 0; i < CONTEXT; i++)
        for (int j = 0; j < UNITS; j++) h1[j] += features[i] * arm->w1[i][j];
    for (int j = 0; j < UNITS; j++) h1[j] = NAME(floor_clip)(h1[j], arm->cap);
    for (int j = 0; j < UNITS; j++) h2[j] = arm->b2[j];
    for (int i = 0; i < UNITS; i++)
        for (int j = 0; j < UNITS; j++) h2[j] += h1[i] * arm->w2[i][j];
    vec out0 = arm->b3[0], out1 = arm->b3[1];
    for (int j = 0; j < UNITS; j++) {
        const vec h = NAME(floor_clip)(h2[j], arm->cap);
        out0 += h * arm->w3[j][0];
        out1 += h * arm->w3[j][1];
    }
    out0 += prediction * splat(1 << FRACTION);
    for (int l = 0; l < LANES; l++) {
        mu[l] = (int64_t)out0[l];
        log_scale[l] = (int64_t)out1[l];
    }
}

/* Every point of the phase: its context, the ARM (LANES nonzero contexts at a time; an all-zero
 * context takes the output computed once for its stride), its centre and table. */
static void NAME(run_phase)(const Arm *arm, const Phase *phase) {
    vec context[CONTEXT] = {{0}}, stride = splat(0.0);
    int64_t mu[LANES], log_scale[LANES], zero_mu[MAX_STRIDE], zero_scale[MAX_STRIDE];
    Py_ssize_t at[LANES];
    const int g = arm->e + FRACTION;
    for (int s = 0; s < MAX_STRIDE; s += LANES) {
        for (int l = 0; l < LANES; l++) stride[l] = s + l;
        NAME(evaluate)(arm, context, stride, zero_mu + s, zero_scale + s);
    }
    int filled = 0;
    for (Py_ssize_t c = 0; c < phase->channels; c++) {
        const int16_t *grid = phase->latents + c * phase->row;
        for (Py_ssize_t i = 0; i < phase->n; i++) {
            int nonzero = 0;
            for (int k = 0; k < CONTEXT; k++) {
                const int16_t v = grid[phase->context[i * CONTEXT + k]];
                nonzero |= v;
                context[k][filled] = v;
            }
            const int s = (int)phase->stride[phase->one_stride ? 0 : i];
            if (!nonzero) {
                store(phase, g, c * phase->n + i, zero_mu[s], zero_scale[s]);
                continue;
            }
            stride[filled] = s;
            at[filled++] = c * phase->n + i;
            if (filled == LANES) {
                NAME(evaluate)(arm, context, stride, mu, log_scale);
                for (int l = 0; l < LANES; l++) store(phase, g, at[l], mu[l], log_scale[l]);
                filled = 0;
            }
        }
    }
    if (filled) { /* the lanes past the last context hold earlier ones: evaluated, not stored */
        NAME(evaluate)(arm, context, stride, mu, log_scale);
        for (int l = 0; l < filled; l++) store(phase, g, at[l], mu[l], log_scale[l]);
    }
}
