// Branch-free float math that GCC/Clang auto-vectorise (AVX2/AVX-512) inside `#pragma omp simd` loops.
// std::exp is a library call the vectoriser cannot inline, so a softmax row built on it runs one lane at a time.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace tgb {

// Forced inlining: a call to one of these inside a simd loop stops the loop from vectorising, and GCC's inliner gives
// up on them once the calling kernel grows (it did: softmax rows ran 5x slower with exp_f32 left as a call).
#if defined(__GNUC__)
#define TGB_INLINE inline __attribute__((always_inline))
#else
#define TGB_INLINE inline
#endif

static TGB_INLINE float bits_to_float(int32_t i) { float f; std::memcpy(&f, &i, 4); return f; }
static TGB_INLINE int32_t float_to_bits(float f) { int32_t i; std::memcpy(&i, &f, 4); return i; }

// exp(x) for x in [-104, 88.8] (no special cases), max error ~2 ulp: Cephes polynomial after range reduction.
static TGB_INLINE float exp_core_f32(float xc) {
  const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  // Round xc*log2(e) to the nearest integer n with the 1.5*2^23 trick: no float->int conversion (UB for NaN).
  float t = xc * log2e + 12582912.0f;
  int32_t n = float_to_bits(t) - 0x4B400000;
  float fn = t - 12582912.0f;
  float r = xc - fn * ln2_hi - fn * ln2_lo;  // |r| <= ln2/2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n in two halves so n in [-150, 128] never leaves the normal exponent range of either factor.
  int32_t n1 = n >> 1, n2 = n - n1;
  return p * bits_to_float((n1 + 127) << 23) * bits_to_float((n2 + 127) << 23);
}

// exp(x) in float, max error ~2 ulp, correct limits:
//   exp(-inf) == 0 exactly, denormal results down to 2^-149, exp(NaN) == NaN, exp(x > 88.72) == inf.
static TGB_INLINE float exp_f32(float x) {
  const float y = exp_core_f32(x < -104.0f ? -104.0f : (x > 88.8f ? 88.8f : x));
  const float z = x < -104.0f ? 0.0f : y;
  return x > 88.72283935546875f ? INFINITY : z;
}

// exp(x) for arguments that cannot overflow (x <= 88.7: in softmax, x - max(x) <= 0), with exp_f32's other limits:
// exp(-inf) == 0, denormals, NaN. Two compares and two selects fewer than exp_f32 in the hottest loops.
static TGB_INLINE float exp_nonpos_f32(float x) {
  const bool under = x < -104.0f;
  const float y = exp_core_f32(under ? -104.0f : x);
  return under ? 0.0f : y;
}

// log(u) for u in [1, 2] (Cephes logf polynomial, about 1 ulp): all that log1p(exp(-a)) needs, branch-free.
static TGB_INLINE float log_1to2_f32(float u) {
  const int32_t bits = float_to_bits(u);
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // mantissa in [1, 2)
  float e = float((bits >> 23) - 127);                          // 0, or 1 for u == 2
  // move m to [sqrt(1/2), sqrt(2)). Both sides of each select are computed unconditionally: GCC will not
  // if-convert (and so not vectorise) a conditional floating-point operation, which could trap.
  const bool big = m > 1.41421356f;
  const float half_m = 0.5f * m;
  m = big ? half_m : m;
  e += big ? 1.0f : 0.0f;
  const float f = m - 1.0f, z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = p * f * z - 2.12194440e-4f * e - 0.5f * z;
  return f + y + 0.693359375f * e;
}

// log(1 + exp(-a)) for a >= 0 (softplus(-a)), accurate also when exp(-a) is far below float epsilon:
// log1p(t) = log(u) * t / (u - 1) with u = 1 + t (Goldberg's trick), and t itself when u rounds to 1.
static TGB_INLINE float log1p_exp_neg_f32(float a) {
  // exp(-a) without exp_f32's special cases: a >= 0, and past a = 104 exp(-a) is below every float anyway. (With
  // the INFINITY/0 selects, GCC threads jumps into the log below and the loop no longer vectorises.)
  const float t = exp_core_f32(a > 104.0f ? -104.0f : -a), u = 1.0f + t, d = u - 1.0f;
  const float r = log_1to2_f32(u) * (t / (d == 0.0f ? 1.0f : d));  // no division by zero, even unused
  return d == 0.0f ? t : r;
}

template <typename T> static inline T exp_fast(T x);
template <> TGB_INLINE float exp_fast<float>(float x) { return exp_f32(x); }
template <> TGB_INLINE double exp_fast<double>(double x) { return std::exp(x); }
template <typename T> static inline T exp_nonpos(T x);  // x <= 88.7 (no overflow)
template <> TGB_INLINE float exp_nonpos<float>(float x) { return exp_nonpos_f32(x); }
template <> TGB_INLINE double exp_nonpos<double>(double x) { return std::exp(x); }

template <typename T> static inline T log1p_exp_neg(T a);
template <> TGB_INLINE float log1p_exp_neg<float>(float a) { return log1p_exp_neg_f32(a); }
template <> TGB_INLINE double log1p_exp_neg<double>(double a) { return std::log1p(std::exp(-a)); }

}  // namespace tgb
