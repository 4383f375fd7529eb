/* The selective SSM of a Mamba layer on the CPU, forward and backward (ocrlib.fused).
 *
 * One call does what the PyTorch path does in ~10 operations forward and ~20 backward:
 *   s_t = softplus(dt_t)  (or dt_t itself),   x_t = s_t * u_t
 *   h_t = exp(s_t * A) * h_{t-1} + B_t * x_t, y_t = C_t . h_t
 *   out_t = (y_t + D * u_t) * silu(z_t)       (D and z optional)
 *
 * Time-major float32 tensors, all contiguous:
 *   u, dt, z, out, dout, du, ddt, dz: (l, b, d)   A, dA: (d, n)   B, C, dB, dC: (l, b, n)
 *   D, dD: (d)
 *
 * The element-wise parts run as flat vectorised passes (softplus, sigmoid). The recurrence runs
 * on blocks of W = 16 neighbouring channels of one line, a vector lane per channel (the
 * channels are contiguous in memory): per time step n independent vector updates, one per
 * state, with no sums across lanes, so the processor overlaps them. The backward recomputes a
 * block's states and decays into a small buffer (2 * l * n * W floats) instead of keeping
 * l * b * d * n of them from the forward, then runs the adjoint recurrence
 * g_{t-1} = exp(s_t A) g_t + C_{t-1} dy_{t-1} backwards in time. Blocks are shared among
 * threads; each thread sums its dA, dB, dC and dD in its own buffer, added up at the end.
 * The entry points return 0, 1 when memory ran out or 2 when n > MAX_STATE (outputs then
 * undefined).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
/* Within the recurrence's threads, denormals count as zero (decays of 1e-38 times a state):
 * x86 runs them through slow microcode. The caller's setting is restored on the way out. */
#define FLUSH_ON const unsigned int csr_ = _mm_getcsr(); _mm_setcsr(csr_ | 0x8040);
#define FLUSH_OFF _mm_setcsr(csr_);
#else
#define FLUSH_ON
#define FLUSH_OFF
#endif

#define IDX(t, bi, di) (((long)(t) * b + (bi)) * d + (di))
#define ROW(t, bi) (((long)(t) * b + (bi)) * n)
#define W 16 /* channels per block: one AVX-512 vector of floats */
#define MAX_STATE 64 /* the blocks' state buffers: n <= 64 (fused.MAX_STATE) */
#define INLINE static inline __attribute__((always_inline))

int ocr_scan_abi(void) { return 2; }

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* s = softplus(dt) (PyTorch's threshold 20) or dt; optionally sigmoid(dt) and sigmoid(z). */
static void elementwise(const float *dt, const float *z, int softplus, float *s, float *sig_dt,
                        float *sig_z, long size, int threads) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (long i = 0; i < size; ++i) {
        const float v = dt[i], e = expf(v);
        s[i] = softplus ? (v > 20.0f ? v : log1pf(e)) : v;
        if (sig_dt) sig_dt[i] = softplus ? (v > 20.0f ? 1.0f : e / (1.0f + e)) : 1.0f;
        if (sig_z) sig_z[i] = 1.0f / (1.0f + expf(-z[i]));
    }
}

/* exp(x) for x <= 0 (the decays exp(s A): s >= 0, A < 0; above 0 it stays exact up to 88,
 * then inf, like expf), inlined so that the compiler
 * vectorises it with the loop: x = m ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 Taylor
 * polynomial (relative error below 3e-7), times 2^m built in the exponent bits. Below -87
 * (2^-126) it returns 0, where expf would return a denormal or 0. */
INLINE float exp_neg(float x) {
    const float m = rintf(x * 1.44269504f);
    const float r = (x - m * 0.693145752f) - m * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int i; float f; } scale;
    scale.i = ((int)(m < -126.0f ? -126.0f : m > 128.0f ? 128.0f : m) + 127) << 23; /* 128: inf */
    return x < -87.0f ? 0.0f : p * scale.f;
}

/* The forward of channels c0 .. c0+w-1 of line bi. At (d, n) is A transposed: (n, d). */
INLINE void block_fwd(const float *u, const float *s, const float *z, const float *sz,
                      const float *At, const float *B, const float *C, const float *D,
                      float *out, long bi, long c0, long w, long l, long b, long d, long n) {
    float h[MAX_STATE * W], Dv[W];
    memset(h, 0, sizeof(float) * (size_t)(n * W));
    for (long j = 0; j < w; ++j) Dv[j] = D ? D[c0 + j] : 0.0f;
    for (long t = 0; t < l; ++t) {
        const long i = IDX(t, bi, c0);
        const float *st = s + i, *ut = u + i, *Bt = B + ROW(t, bi), *Ct = C + ROW(t, bi);
        float x[W], acc[W];
        for (long j = 0; j < w; ++j) x[j] = st[j] * ut[j], acc[j] = Dv[j] * ut[j];
        for (long k = 0; k < n; ++k) {
            const float bk = Bt[k], ck = Ct[k], *ak = At + k * d + c0;
            float *hk = h + k * W;
#pragma omp simd
            for (long j = 0; j < w; ++j) {
                hk[j] = exp_neg(st[j] * ak[j]) * hk[j] + bk * x[j];
                acc[j] += ck * hk[j];
            }
        }
        if (z)
            for (long j = 0; j < w; ++j) out[i + j] = acc[j] * z[i + j] * sz[i + j];
        else
            for (long j = 0; j < w; ++j) out[i + j] = acc[j];
    }
}

static float *transpose(const float *A, long d, long n) {
    float *At = (float *)malloc(sizeof(float) * (size_t)(d * n));
    if (At)
        for (long di = 0; di < d; ++di)
            for (long k = 0; k < n; ++k) At[k * d + di] = A[di * n + k];
    return At;
}

int ocr_ssm_fwd(const float *u, const float *dt, const float *z, const float *A, const float *B,
                const float *C, const float *D, int softplus, float *out, long l, long b, long d,
                long n, int threads) {
    const long size = l * b * d, blocks = (d + W - 1) / W;
    if (n > MAX_STATE) return 2;
    float *s = (float *)malloc(sizeof(float) * (size_t)(2 * size + 1)), *sz = s + size;
    float *At = transpose(A, d, n);
    if (!s || !At) {
        free(s), free(At);
        return 1;
    }
    elementwise(dt, z, softplus, s, NULL, z ? sz : NULL, size, threads);
#pragma omp parallel num_threads(threads)
    {
        FLUSH_ON
#pragma omp for schedule(static)
        for (long job = 0; job < b * blocks; ++job) {
            const long bi = job / blocks, c0 = (job % blocks) * W, w = d - c0 < W ? d - c0 : W;
            if (w == W)
                block_fwd(u, s, z, sz, At, B, C, D, out, bi, c0, W, l, b, d, n);
            else
                block_fwd(u, s, z, sz, At, B, C, D, out, bi, c0, w, l, b, d, n);
        }
        FLUSH_OFF
    }
    free(s), free(At);
    return 0;
}

/* One thread's work space and sums. */
typedef struct {
    float *hs, *es, *dy;   /* the block's states and decays (l, n, W), dy (l, W) */
    float *accB, *accC;    /* the current line's dB, dC per lane (l, n, W) */
    float *dA, *dB, *dC, *dD; /* the thread's sums: (d, n), (l, b, n), (l, b, n), (d) */
} Work;

/* The backward of channels c0 .. c0+w-1 of line bi; du and ds (before ds/d(dt)) written. */
INLINE void block_bwd(const float *u, const float *z, const float *s, const float *sig_z,
                      const float *At, const float *B, const float *C, const float *D,
                      const float *dout, float *du, float *dds, float *dz, const Work *wk,
                      long bi, long c0, long w, long l, long b, long d, long n) {
    float h[MAX_STATE * W], g[MAX_STATE * W], dAl[MAX_STATE * W], Dv[W], dDl[W];
    memset(h, 0, sizeof(float) * (size_t)(n * W));
    memset(g, 0, sizeof(float) * (size_t)(n * W));
    memset(dAl, 0, sizeof(float) * (size_t)(n * W));
    for (long j = 0; j < W; ++j) Dv[j] = D && j < w ? D[c0 + j] : 0.0f, dDl[j] = 0.0f;
    for (long t = 0; t < l; ++t) { /* states and decays again; y for the gate's gradient */
        const long i = IDX(t, bi, c0);
        const float *st = s + i, *ut = u + i, *Bt = B + ROW(t, bi), *Ct = C + ROW(t, bi);
        float x[W], y[W];
        for (long j = 0; j < w; ++j) x[j] = st[j] * ut[j], y[j] = Dv[j] * ut[j];
        for (long k = 0; k < n; ++k) {
            const float bk = Bt[k], ck = Ct[k], *ak = At + k * d + c0;
            float *hk = h + k * W, *ht = wk->hs + (t * n + k) * W, *et = wk->es + (t * n + k) * W;
#pragma omp simd
            for (long j = 0; j < w; ++j) {
                et[j] = exp_neg(st[j] * ak[j]);
                hk[j] = et[j] * hk[j] + bk * x[j];
                ht[j] = hk[j];
                y[j] += ck * hk[j];
            }
        }
        float *dyt = wk->dy + t * W;
        if (z) { /* out = v silu(z): dz = dout v silu'(z), dv = dout silu(z) */
            const float *zt = z + i, *sg = sig_z + i, *dot = dout + i;
            float *dzt = dz + i;
#pragma omp simd
            for (long j = 0; j < w; ++j) {
                dzt[j] = dot[j] * y[j] * sg[j] * (1.0f + zt[j] * (1.0f - sg[j]));
                dyt[j] = dot[j] * zt[j] * sg[j];
            }
        } else {
            for (long j = 0; j < w; ++j) dyt[j] = dout[i + j];
        }
        for (long j = 0; j < w; ++j) dDl[j] += dyt[j] * ut[j];
    }
    for (long t = l - 1; t >= 0; --t) {
        const long i = IDX(t, bi, c0);
        const float *st = s + i, *ut = u + i, *dyt = wk->dy + t * W;
        const float *Bt = B + ROW(t, bi), *Ct = C + ROW(t, bi);
        float x[W], dx[W], ds[W];
        for (long j = 0; j < w; ++j) x[j] = st[j] * ut[j], dx[j] = 0.0f, ds[j] = 0.0f;
        for (long k = 0; k < n; ++k) {
            const float bk = Bt[k], ck = Ct[k];
            const float *ht = wk->hs + (t * n + k) * W;
            float *gk = g + k * W, *aB = wk->accB + (t * n + k) * W, *aC = wk->accC + (t * n + k) * W;
#pragma omp simd
            for (long j = 0; j < w; ++j) {
                gk[j] += ck * dyt[j];  /* g_t = C_t dy_t + exp(s_{t+1} A) g_{t+1} */
                aC[j] += ht[j] * dyt[j]; /* dC_t = sum_d h_t dy_t */
                dx[j] += bk * gk[j];   /* dx_t = sum_n B_t g_t */
                aB[j] += gk[j] * x[j]; /* dB_t = sum_d g_t x_t */
            }
        }
        if (t > 0) { /* exp(s_0 A) multiplies h_{-1} = 0: no gradient through it */
            for (long k = 0; k < n; ++k) {
                const float *ak = At + k * d + c0, *hp = wk->hs + ((t - 1) * n + k) * W;
                const float *et = wk->es + (t * n + k) * W;
                float *gk = g + k * W, *dA = dAl + k * W;
#pragma omp simd
                for (long j = 0; j < w; ++j) {
                    gk[j] *= et[j];
                    const float q = gk[j] * hp[j]; /* dLoss/d(s_t A) */
                    ds[j] += q * ak[j];
                    dA[j] += q * st[j];
                }
            }
        }
        for (long j = 0; j < w; ++j) {
            du[i + j] = dyt[j] * Dv[j] + dx[j] * st[j];
            dds[i + j] = ds[j] + dx[j] * ut[j];
        }
    }
    for (long j = 0; j < w; ++j) {
        for (long k = 0; k < n; ++k) wk->dA[(c0 + j) * n + k] += dAl[k * W + j];
        if (wk->dD) wk->dD[c0 + j] += dDl[j];
    }
}

/* Add the current line's per-lane dB, dC into the thread's sums, and clear them. */
static void flush_line(const Work *wk, long bi, long l, long b, long n) {
    for (long t = 0; t < l; ++t)
        for (long k = 0; k < n; ++k) {
            float *aB = wk->accB + (t * n + k) * W, *aC = wk->accC + (t * n + k) * W;
            float sb = 0.0f, sc = 0.0f;
            for (long j = 0; j < W; ++j) sb += aB[j], sc += aC[j], aB[j] = 0.0f, aC[j] = 0.0f;
            wk->dB[ROW(t, bi) + k] += sb;
            wk->dC[ROW(t, bi) + k] += sc;
        }
}

int ocr_ssm_bwd(const float *u, const float *dt, const float *z, const float *A, const float *B,
                const float *C, const float *D, int softplus, const float *dout, float *du,
                float *ddt, float *dz, float *dA, float *dB, float *dC, float *dD, long l,
                long b, long d, long n, int threads) {
    const long size = l * b * d, rows = l * b * n, blocks = (d + W - 1) / W;
    if (n > MAX_STATE) return 2;
#ifndef _OPENMP
    threads = 1;
#endif
    if (threads < 1) threads = 1;
    const long sums = d * n + 2 * rows + d, space = 4 * l * n * W + l * W;
    float *s = (float *)malloc(sizeof(float) * (size_t)(3 * size));
    float *part = (float *)calloc((size_t)(threads * (sums + space)), sizeof(float));
    float *At = transpose(A, d, n);
    if (!s || !part || !At) {
        free(s), free(part), free(At);
        return 1;
    }
    float *sig_dt = s + size, *sig_z = s + 2 * size;
    elementwise(dt, z, softplus, s, sig_dt, z ? sig_z : NULL, size, threads);
#pragma omp parallel num_threads(threads)
    {
        FLUSH_ON
        const int tid = thread_id();
        float *mine = part + tid * (sums + space), *ws = mine + sums;
        const Work wk = {ws, ws + l * n * W, ws + 2 * l * n * W, ws + 2 * l * n * W + l * W,
                         ws + 3 * l * n * W + l * W, mine, mine + d * n, mine + d * n + rows,
                         D ? mine + d * n + 2 * rows : NULL};
        long line = -1;
#pragma omp for schedule(static)
        for (long job = 0; job < b * blocks; ++job) {
            const long bi = job / blocks, c0 = (job % blocks) * W, w = d - c0 < W ? d - c0 : W;
            if (bi != line && line >= 0) flush_line(&wk, line, l, b, n);
            line = bi;
            if (w == W)
                block_bwd(u, z, s, sig_z, At, B, C, D, dout, du, ddt, dz, &wk, bi, c0, W, l, b, d, n);
            else
                block_bwd(u, z, s, sig_z, At, B, C, D, dout, du, ddt, dz, &wk, bi, c0, w, l, b, d, n);
        }
        if (line >= 0) flush_line(&wk, line, l, b, n);
        FLUSH_OFF
    }
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (long i = 0; i < size; ++i) ddt[i] *= sig_dt[i]; /* ds/d(dt) */
    /* add up the threads' sums */
    memcpy(dA, part, sizeof(float) * (size_t)(d * n));
    memcpy(dB, part + d * n, sizeof(float) * (size_t)rows);
    memcpy(dC, part + d * n + rows, sizeof(float) * (size_t)rows);
    if (dD) memcpy(dD, part + d * n + 2 * rows, sizeof(float) * (size_t)d);
    for (int r = 1; r < threads; ++r) {
        const float *p = part + r * (sums + space);
        for (long j = 0; j < d * n; ++j) dA[j] += p[j];
        for (long j = 0; j < rows; ++j) dB[j] += p[d * n + j], dC[j] += p[d * n + rows + j];
        if (dD)
            for (long j = 0; j < d; ++j) dD[j] += p[d * n + 2 * rows + j];
    }
    free(s), free(part), free(At);
    return 0;
}
