#pragma once
#include <stddef.h>
#include <stdint.h>
// Elementwise and attention kernels for the CLIP forward pass. Every kernel has a portable C body and
// an AVX2+FMA body selected once at run time (`__attribute__((target))`, no -march flags needed).
// Buffers are row-major float; shapes are given in the comments. Kernels work on a range of rows so the
// Swift side can split work across threads; none of them allocates.

/// 1 if the AVX2+FMA paths are in use on this CPU.
int ck_has_avx2_fma(void);
/// Force the portable paths (0) or allow the fast ones (1); used by the tests to compare both.
void ck_set_simd_enabled(int enabled);

/// Activations, as named in HF configs (`hidden_act`).
typedef enum {
    CK_ACT_IDENTITY = 0,
    CK_ACT_QUICK_GELU = 1,   // x * sigmoid(1.702 x)             (OpenAI CLIP)
    CK_ACT_GELU = 2,         // 0.5 x (1 + erf(x / sqrt 2))     (torch.nn.functional.gelu)
    CK_ACT_GELU_TANH = 3,    // 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))  (gelu_new, gelu_pytorch_tanh)
    CK_ACT_RELU = 4,
} ck_activation;

/// y[r, :] = LayerNorm(x[r, :]) * gamma + beta for r in [row0, row1); x, y: [rows, cols]. y may alias x.
void ck_layernorm(const float *x, float *y, const float *gamma, const float *beta,
                  int64_t row0, int64_t row1, int64_t cols, float eps);

/// Fused residual tail: h[r, :] += bias; then y[r, :] = LayerNorm(h[r, :]) (y must not alias h).
/// Used after a GEMM that accumulated into the residual stream with beta = 1.
void ck_add_bias_layernorm(float *h, const float *bias, float *y, const float *gamma,
                           const float *beta, int64_t row0, int64_t row1, int64_t cols, float eps);

/// x[r, :] = act(x[r, :] + bias) for r in [row0, row1); x: [rows, cols]; bias may be NULL.
void ck_bias_activation(float *x, const float *bias, int64_t row0, int64_t row1, int64_t cols,
                        ck_activation act);

/// h[r, :] += bias for r in [row0, row1).
void ck_add_bias(float *h, const float *bias, int64_t row0, int64_t row1, int64_t cols);

/// One attention head over one sequence of n tokens (softmax(q k^T * scale + mask) v).
/// q, k, v point at the head's first column in row-major buffers with row strides ldq / ldk / ldv
/// (q = qkv + head*d, k = qkv + W + head*d, v = qkv + 2W + head*d for a fused [n, 3W] buffer).
/// out: [n, d] at stride ldo. scratch: ck_attention_scratch_floats(n, d) floats. causal: row i sees
/// columns 0..i.
void ck_attention_head(const float *q, int64_t ldq, const float *k, int64_t ldk,
                       const float *v, int64_t ldv, float *out, int64_t ldo,
                       int64_t n, int64_t d, float scale, int causal, float *scratch);

/// Scratch floats one ck_attention_head call needs (the head's keys transposed, plus the scores).
static inline int64_t ck_attention_scratch_floats(int64_t n, int64_t d) {
    int64_t npad = (n + 7) & ~(int64_t)7;
    return d * npad + npad;
}
