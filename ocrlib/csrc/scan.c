/* The selective scan on the CPU, forward and backward, one channel at a time (ocrlib.fused).
 *
 * Time-major float32 tensors, all contiguous:
 *   delta, du, y, dy, d_delta, d_du: (l, b, d)    A: (d, n)    B, C, dB, dC: (l, b, n)
 *   dA: (b, d, n), partial sums per line (the caller sums over b)
 *
 * Forward, per line bi and channel di, with the n states in registers:
 *   h_t = exp(delta_t * A) * h_{t-1} + B_t * du_t,    y_t = C_t . h_t
 * Backward recomputes the states of one channel into a small buffer (l * n floats) instead of
 * keeping them from the forward (42 MB per layer at l=80, b=16, d=512), then runs the adjoint
 * recurrence g_{t-1} = exp(delta_t A) g_t + C_{t-1} dy_{t-1} backwards in time.
 *
 * Lines are independent, so the work is split over lines (OpenMP); the sums over channels
 * (dB, dC) then stay within one thread.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IDX(t, bi, di) (((long)(t) * b + (bi)) * d + (di))
#define ROW(t, bi) (((long)(t) * b + (bi)) * n)

int ocr_scan_abi(void) { return 1; }

void ocr_scan_fwd(const float *delta, const float *du, const float *A, const float *B,
                  const float *C, float *y, long l, long b, long d, long n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (long bi = 0; bi < b; ++bi) {
        for (long di = 0; di < d; ++di) {
            float h[64];
            const float *a = A + di * n;
            for (long k = 0; k < n; ++k) h[k] = 0.0f;
            for (long t = 0; t < l; ++t) {
                const float dt = delta[IDX(t, bi, di)], x = du[IDX(t, bi, di)];
                const float *Bt = B + ROW(t, bi), *Ct = C + ROW(t, bi);
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (long k = 0; k < n; ++k) {
                    h[k] = expf(dt * a[k]) * h[k] + Bt[k] * x;
                    acc += Ct[k] * h[k];
                }
                y[IDX(t, bi, di)] = acc;
            }
        }
    }
}

int ocr_scan_bwd(const float *delta, const float *du, const float *A, const float *B,
                 const float *C, const float *dy, float *d_delta, float *d_du, float *dA,
                 float *dB, float *dC, long l, long b, long d, long n, int threads) {
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long bi = 0; bi < b; ++bi) {
        float *hs = (float *)malloc(sizeof(float) * (size_t)(l * n + 1));
        if (!hs) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        for (long di = 0; di < d; ++di) {
            const float *a = A + di * n;
            float h[64], g[64];
            float *dAd = dA + (bi * d + di) * n;
            for (long k = 0; k < n; ++k) h[k] = 0.0f, g[k] = 0.0f;
            for (long t = 0; t < l; ++t) { /* the states again */
                const float dt = delta[IDX(t, bi, di)], x = du[IDX(t, bi, di)];
                const float *Bt = B + ROW(t, bi);
                float *ht = hs + t * n;
#pragma omp simd
                for (long k = 0; k < n; ++k) {
                    h[k] = expf(dt * a[k]) * h[k] + Bt[k] * x;
                    ht[k] = h[k];
                }
            }
            for (long t = l - 1; t >= 0; --t) {
                const long i = IDX(t, bi, di);
                const float dyt = dy[i], x = du[i], dt = delta[i];
                const float *Bt = B + ROW(t, bi), *Ct = C + ROW(t, bi), *ht = hs + t * n;
                float *dBt = dB + ROW(t, bi), *dCt = dC + ROW(t, bi);
                float ddu = 0.0f;
#pragma omp simd reduction(+ : ddu)
                for (long k = 0; k < n; ++k) {
                    g[k] += Ct[k] * dyt;     /* g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} */
                    dCt[k] += ht[k] * dyt;   /* dC_t = sum_d h_t dy_t */
                    ddu += Bt[k] * g[k];     /* d(du)_t = sum_n B_t g_t */
                    dBt[k] += g[k] * x;      /* dB_t = sum_d g_t du_t */
                }
                d_du[i] = ddu;
                if (t == 0) { /* exp(delta_0 A) multiplies h_{-1} = 0: no gradient through it */
                    d_delta[i] = 0.0f;
                    break;
                }
                const float *hp = hs + (t - 1) * n;
                float dd = 0.0f;
#pragma omp simd reduction(+ : dd)
                for (long k = 0; k < n; ++k) {
                    g[k] *= expf(dt * a[k]);
                    const float q = g[k] * hp[k]; /* dLoss/d(delta_t A) */
                    dd += q * a[k];
                    dAd[k] += q * dt;
                }
                d_delta[i] = dd;
            }
        }
        free(hs);
    }
    return failed;
}
