// Elementwise and attention kernels; see ckernels.h for the contracts.
// Each kernel: a portable scalar body (the reference) and an AVX2+FMA body, chosen at run time.
#include "ckernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CK_X86 1
#define CK_AVX2 __attribute__((target("avx2,fma")))
#else
#define CK_X86 0
#endif

static int ck_simd = -1;   // -1: not probed yet

int ck_has_avx2_fma(void) {
#if CK_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

void ck_set_simd_enabled(int enabled) { ck_simd = enabled ? ck_has_avx2_fma() : 0; }

static inline int use_simd(void) {
    if (ck_simd < 0) ck_simd = ck_has_avx2_fma();
    return ck_simd;
}

// MARK: - scalar activations (the reference definitions)

static inline float act_scalar(float x, ck_activation act) {
    switch (act) {
    case CK_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case CK_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case CK_ACT_GELU_TANH: {
        float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    case CK_ACT_RELU: return x > 0 ? x : 0;
    default: return x;
    }
}

#if CK_X86
// MARK: - AVX2 helpers

// exp(x) for 8 floats: range reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r
// (Cephes expf coefficients), then scale by 2^n through the exponent bits. Relative error ~1e-7.
CK_AVX2 static inline __m256 exp256(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    __m256 x2 = _mm256_mul_ps(x, x);
    y = _mm256_fmadd_ps(y, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_cvttps_epi32(fx);
    n = _mm256_add_epi32(n, _mm256_set1_epi32(127));
    n = _mm256_slli_epi32(n, 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

CK_AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

CK_AVX2 static inline float hmax256(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

CK_AVX2 static inline __m256 act256(__m256 x, ck_activation act) {
    switch (act) {
    case CK_ACT_QUICK_GELU: {
        // x * sigmoid(1.702 x) = x / (1 + exp(-1.702 x))
        __m256 e = exp256(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)));
        return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    }
    case CK_ACT_GELU_TANH: {
        // tanh(u) = 1 - 2 / (exp(2u) + 1)
        __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                 _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
        __m256 e = exp256(_mm256_add_ps(u, u));
        __m256 t = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                                 _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
        return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), t));
    }
    case CK_ACT_GELU: {
        // 0.5 x (1 + erf(x / sqrt 2)), erf by a rational approximation on [-4, 4] (odd degree-13
        // numerator over even degree-8 denominator, Eigen's float erf; beyond 4, erf is +-1 in float).
        __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
        z = _mm256_min_ps(_mm256_max_ps(z, _mm256_set1_ps(-4.0f)), _mm256_set1_ps(4.0f));
        __m256 z2 = _mm256_mul_ps(z, z);
        __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(2.77068142495902e-08f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(-2.10102402082508e-06f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(-5.69250639462346e-05f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(-7.34990630326855e-04f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(-2.95459980854025e-03f));
        p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(-1.60960333262415e-02f));
        p = _mm256_mul_ps(p, z);
        __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
        q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(-2.13374055278905e-04f));
        q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(-1.68282697438203e-03f));
        q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(-7.37332916720468e-03f));
        q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(-1.42647390514189e-02f));
        __m256 erf = _mm256_div_ps(p, q);
        return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), erf));
    }
    case CK_ACT_RELU: return _mm256_max_ps(x, _mm256_setzero_ps());
    default: return x;
    }
}
#endif

// MARK: - LayerNorm

// Row statistics in float with 8 partial sums, like torch's vectorised CPU LayerNorm; two passes
// (mean, then centred variance) so large offsets do not cancel.
static void layernorm_row_scalar(const float *x, float *y, const float *g, const float *b, int64_t n, float eps) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    float mean = (float)(s / (double)n);
    double v = 0;
    for (int64_t i = 0; i < n; i++) { double d = x[i] - mean; v += d * d; }
    float rstd = 1.0f / sqrtf((float)(v / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * g[i] + b[i];
}

#if CK_X86
CK_AVX2 static void layernorm_row_avx2(const float *x, float *y, const float *g, const float *b, int64_t n, float eps) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(x + i));
    float s = hsum256(acc);
    for (; i < n; i++) s += x[i];
    float mean = s / (float)n;
    __m256 vm = _mm256_set1_ps(mean);
    acc = _mm256_setzero_ps();
    i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
        acc = _mm256_fmadd_ps(d, d, acc);
    }
    float v = hsum256(acc);
    for (; i < n; i++) { float d = x[i] - mean; v += d * d; }
    float rstd = 1.0f / sqrtf(v / (float)n + eps);
    __m256 vr = _mm256_set1_ps(rstd);
    i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(d, _mm256_loadu_ps(g + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) y[i] = (x[i] - mean) * rstd * g[i] + b[i];
}

CK_AVX2 static void add_bias_avx2(float *h, const float *bias, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(h + i, _mm256_add_ps(_mm256_loadu_ps(h + i), _mm256_loadu_ps(bias + i)));
    for (; i < n; i++) h[i] += bias[i];
}

// Returns how many leading columns were done (a multiple of 8); the caller finishes the tail.
CK_AVX2 static int64_t avx2_bias_act_row(float *row, const float *bias, int64_t n, ck_activation act) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(row + i);
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
        _mm256_storeu_ps(row + i, act256(v, act));
    }
    return i;
}
#endif

void ck_layernorm(const float *x, float *y, const float *gamma, const float *beta,
                  int64_t row0, int64_t row1, int64_t cols, float eps) {
    for (int64_t r = row0; r < row1; r++) {
#if CK_X86
        if (use_simd()) { layernorm_row_avx2(x + r * cols, y + r * cols, gamma, beta, cols, eps); continue; }
#endif
        layernorm_row_scalar(x + r * cols, y + r * cols, gamma, beta, cols, eps);
    }
}

void ck_add_bias(float *h, const float *bias, int64_t row0, int64_t row1, int64_t cols) {
    for (int64_t r = row0; r < row1; r++) {
        float *row = h + r * cols;
#if CK_X86
        if (use_simd()) { add_bias_avx2(row, bias, cols); continue; }
#endif
        for (int64_t i = 0; i < cols; i++) row[i] += bias[i];
    }
}

void ck_add_bias_layernorm(float *h, const float *bias, float *y, const float *gamma,
                           const float *beta, int64_t row0, int64_t row1, int64_t cols, float eps) {
    for (int64_t r = row0; r < row1; r++) {
        float *row = h + r * cols;
#if CK_X86
        if (use_simd()) {
            add_bias_avx2(row, bias, cols);
            layernorm_row_avx2(row, y + r * cols, gamma, beta, cols, eps);
            continue;
        }
#endif
        for (int64_t i = 0; i < cols; i++) row[i] += bias[i];
        layernorm_row_scalar(row, y + r * cols, gamma, beta, cols, eps);
    }
}

// MARK: - bias + activation

void ck_bias_activation(float *x, const float *bias, int64_t row0, int64_t row1, int64_t cols,
                        ck_activation act) {
    for (int64_t r = row0; r < row1; r++) {
        float *row = x + r * cols;
        int64_t i = 0;
#if CK_X86
        if (use_simd()) {
            i = avx2_bias_act_row(row, bias, cols, act);
        }
#endif
        for (; i < cols; i++) row[i] = act_scalar(row[i] + (bias ? bias[i] : 0.0f), act);
    }
}

// MARK: - attention

static void attention_head_scalar(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                  const float *v, int64_t ldv, float *out, int64_t ldo,
                                  int64_t n, int64_t d, float scale, int causal, float *sc) {
    for (int64_t i = 0; i < n; i++) {
        int64_t m = causal ? i + 1 : n;   // keys this query may see
        float mx = -INFINITY;
        for (int64_t j = 0; j < m; j++) {
            float s = 0;
            for (int64_t c = 0; c < d; c++) s += q[i * ldq + c] * k[j * ldk + c];
            sc[j] = s * scale;
            if (sc[j] > mx) mx = sc[j];
        }
        float sum = 0;
        for (int64_t j = 0; j < m; j++) { sc[j] = expf(sc[j] - mx); sum += sc[j]; }
        float inv = 1.0f / sum;
        float *o = out + i * ldo;
        for (int64_t c = 0; c < d; c++) o[c] = 0;
        for (int64_t j = 0; j < m; j++) {
            float p = sc[j] * inv;
            for (int64_t c = 0; c < d; c++) o[c] += p * v[j * ldv + c];
        }
    }
}

#if CK_X86
// scores[j0 .. j0 + 8*NV) = q . kt[:, j0 ..] with kt the head's keys transposed ([d][npad]): NV vector
// accumulators stay in registers while the head dimension streams by (no horizontal sums).
#define CK_SCORE_BLOCK(NV)                                                                   \
    CK_AVX2 static inline void score_block_##NV(const float *qi, const float *kt, int64_t npad, \
                                               int64_t d, int64_t j0, float *sc) {          \
        __m256 acc[NV];                                                                      \
        for (int v = 0; v < NV; v++) acc[v] = _mm256_setzero_ps();                           \
        for (int64_t c = 0; c < d; c++) {                                                    \
            __m256 qc = _mm256_set1_ps(qi[c]);                                               \
            const float *row = kt + c * npad + j0;                                           \
            for (int v = 0; v < NV; v++)                                                     \
                acc[v] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(row + 8 * v), acc[v]);          \
        }                                                                                    \
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(sc + j0 + 8 * v, acc[v]);              \
    }
CK_SCORE_BLOCK(1)
CK_SCORE_BLOCK(2)
CK_SCORE_BLOCK(4)
CK_SCORE_BLOCK(8)

// scratch layout: kt [d][npad] (npad = n rounded up to 8), then scores [npad].
CK_AVX2 static void attention_head_avx2(const float *q, int64_t ldq, const float *k, int64_t ldk,
                                        const float *v, int64_t ldv, float *out, int64_t ldo,
                                        int64_t n, int64_t d, float scale, int causal, float *scratch) {
    const int64_t npad = (n + 7) & ~(int64_t)7;
    float *kt = scratch, *sc = scratch + d * npad;
    for (int64_t j = 0; j < n; j++)
        for (int64_t c = 0; c < d; c++) kt[c * npad + j] = k[j * ldk + c];
    for (int64_t c = 0; c < d; c++)
        for (int64_t j = n; j < npad; j++) kt[c * npad + j] = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t m = causal ? i + 1 : n;
        const float *qi = q + i * ldq;
        // scores_j = scale * q_i . k_j for j < m, in blocks of 64 / 32 / 16 / 8 keys
        int64_t j0 = 0;
        const int64_t m8 = (m + 7) & ~(int64_t)7;
        while (j0 < m8) {
            int64_t left = (m8 - j0) / 8;
            if (left >= 8) { score_block_8(qi, kt, npad, d, j0, sc); j0 += 64; }
            else if (left >= 4) { score_block_4(qi, kt, npad, d, j0, sc); j0 += 32; }
            else if (left >= 2) { score_block_2(qi, kt, npad, d, j0, sc); j0 += 16; }
            else { score_block_1(qi, kt, npad, d, j0, sc); j0 += 8; }
        }
        // softmax over the visible keys: max, exp(x - max), sum, scale by 1/sum (torch's order)
        float mx = -INFINITY;
        for (int64_t j = 0; j < m; j++) { sc[j] *= scale; if (sc[j] > mx) mx = sc[j]; }
        __m256 vsum = _mm256_setzero_ps(), vmx = _mm256_set1_ps(mx);
        int64_t j = 0;
        for (; j + 8 <= m; j += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sc + j), vmx));
            _mm256_storeu_ps(sc + j, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        float sum = hsum256(vsum);
        for (; j < m; j++) { sc[j] = expf(sc[j] - mx); sum += sc[j]; }
        const float inv = 1.0f / sum;
        // out_i = sum_j p_ij v_j, vectorised over the head dimension
        float *o = out + i * ldo;
        int64_t c = 0;
        for (; c + 32 <= d; c += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t jj = 0; jj < m; jj++) {
                const float *vj = v + jj * ldv + c;
                __m256 p = _mm256_set1_ps(sc[jj] * inv);
                a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj), a0);
                a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8), a1);
                a2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 16), a2);
                a3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 24), a3);
            }
            _mm256_storeu_ps(o + c, a0); _mm256_storeu_ps(o + c + 8, a1);
            _mm256_storeu_ps(o + c + 16, a2); _mm256_storeu_ps(o + c + 24, a3);
        }
        for (; c + 8 <= d; c += 8) {
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t jj = 0; jj < m; jj++)
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(sc[jj] * inv), _mm256_loadu_ps(v + jj * ldv + c), a0);
            _mm256_storeu_ps(o + c, a0);
        }
        for (; c < d; c++) {
            float a = 0;
            for (int64_t jj = 0; jj < m; jj++) a += sc[jj] * inv * v[jj * ldv + c];
            o[c] = a;
        }
    }
}
#endif

void ck_attention_head(const float *q, int64_t ldq, const float *k, int64_t ldk,
                       const float *v, int64_t ldv, float *out, int64_t ldo,
                       int64_t n, int64_t d, float scale, int causal, float *scores) {
#if CK_X86
    if (use_simd()) { attention_head_avx2(q, ldq, k, ldk, v, ldv, out, ldo, n, d, scale, causal, scores); return; }
#endif
    attention_head_scalar(q, ldq, k, ldk, v, ldv, out, ldo, n, d, scale, causal, scores);
}
